"""The Table-3-shaped comparison from evaluation results (no torch here).

Rows: Pre-edit, FT-L, MEND (single-task), MEND (multi-task), InstructEdit; columns: task x metric,
the hold-out task (ZsRE) last. Values x100, best per column marked. Sources:
  * evaluation output folders (what `instructedit evaluate --out DIR` writes: summary.csv plus
    run.json with the method tags); a folder is searched recursively, so one parent folder of
    several evaluations makes one table;
  * an MLflow experiment name: its runs' `<split>/<task>/<metric>` metrics and `method` tags.
Both go through the same tidy shape and `analysis.tables.table3`, so the evaluate command and the
HTML report show the same table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

TIDY = ["run_id", "kind", "method", "mode", "tasks", "study", "instruction_setting", "split", "task", "metric",
        "value"]


def read_eval_dir(path: str | Path) -> pd.DataFrame:
    """Every evaluation folder under `path` (summary.csv + run.json) -> tidy rows."""
    frames = []
    for summary in sorted(Path(path).rglob("summary.csv")):
        folder = summary.parent
        info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
        tags = info.get("tags", {})
        df = pd.read_csv(summary)
        if df.empty:
            continue
        df = df[df["task"] != "avg"].copy()
        df["run_id"] = info.get("run_id") or str(folder)
        df["kind"] = "eval"
        df["study"] = tags.get("study", "")
        for k in ("method", "mode", "tasks", "instruction_setting"):
            df[k] = tags.get(k, "")
        frames.append(df[TIDY])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TIDY)


def read_experiment(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    from analysis.runs import load_runs

    return load_runs(experiment, tracking_uri, include_training=False)


def compare_table(source: str | Path, split: str = "test", tracking_uri: str | None = None,
                  tasks: list[str] | None = None):
    """-> analysis.tables.Table (Table 3 shape) from a folder of evaluations or an experiment."""
    from analysis.tables import table3

    p = Path(source)
    tidy = read_eval_dir(p) if p.exists() else read_experiment(str(source), tracking_uri)
    if tidy.empty:
        raise ValueError(f"no evaluation results found in {source!r} (a folder with summary.csv files, "
                         "or an MLflow experiment with test/<task>/<metric> metrics)")
    return table3(tidy, split=split, tasks=tasks)


def write_table(table, out_dir: str | Path, stem: str = "table3") -> dict[str, Path]:
    """CSV and Markdown (and HTML) of the table; returns the paths."""
    return table.save(out_dir, stem)


def print_table(table) -> str:
    """A plain-text rendering for the terminal."""
    cells = table.formatted()
    cells.columns = table.column_names()
    text = f"{table.title} (x100)\n" + cells.to_string()
    print(text)
    return text

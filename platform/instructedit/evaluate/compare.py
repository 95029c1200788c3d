"""Methods compared on the same cases: seeds aggregated, intervals, paired differences.

Input: evaluation folders (what `instructedit evaluate --out DIR` writes: cases.parquet plus
run.json with the method tags), found recursively under one root. Evaluations of one method that
differ only by training seed (tag `seed`) are one row: the value of a cell is the mean over seeds
of the mean over cases, and its interval resamples cases and seeds (stats.bootstrap on the seeds x
cases matrix). A difference between two methods uses the cases both were evaluated on, paired.
Torch-free, like stats and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .metrics import edit_success, format_estimate, order


@dataclass(frozen=True)
class Cell:
    est: stats.Estimate
    seeds: int


def read_cases(root: str | Path) -> pd.DataFrame:
    """Every evaluation under `root` -> one long frame: method, seed, split, task, case_id, metrics."""
    frames = []
    for path in sorted(Path(root).rglob("cases.parquet")):
        info = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
        tags = info.get("tags", {})
        df = pd.read_parquet(path)
        if df.empty:
            continue
        df = df.copy()
        df["edit_success"] = [edit_success(r) for r in df.to_dict("records")]
        df["method"] = tags.get("method") or path.parent.name
        df["seed"] = str(tags.get("seed", ""))
        df["source"] = str(path.parent)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _matrix(df: pd.DataFrame, metric: str, case_ids: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(seeds, cases) values of one method, task and metric; cases in a fixed order."""
    wide = df.pivot_table(index="seed", columns="case_id", values=metric, aggfunc="mean")
    cases = case_ids if case_ids is not None else sorted(wide.columns)
    wide = wide.reindex(columns=cases)
    return wide.to_numpy(dtype=float), cases


def cell(df: pd.DataFrame, method: str, task: str, metric: str) -> Cell | None:
    sub = df[(df["method"] == method) & (df["task"] == task)]
    if metric not in sub or sub[metric].isna().all():
        return None
    m, _ = _matrix(sub, metric)
    return Cell(stats.bootstrap(m), m.shape[0])


def paired_difference(df: pd.DataFrame, a: str, b: str, task: str, metric: str) -> stats.Estimate | None:
    """mean(a) - mean(b) over the cases of `task` both methods were evaluated on, paired."""
    sa, sb = (df[(df["method"] == x) & (df["task"] == task)] for x in (a, b))
    if metric not in df or sa.empty or sb.empty:
        return None
    common = sorted(set(sa["case_id"]) & set(sb["case_id"]))
    if not common:
        return None
    ma, _ = _matrix(sa, metric, common)
    mb, _ = _matrix(sb, metric, common)
    return stats.paired(ma, mb)


def methods_in_order(df: pd.DataFrame) -> list[str]:
    """The method registry's order of the methods present (display names), others after."""
    from ..editor.methods import METHODS  # torch-free registry

    known = [m.display for m in METHODS]
    present = list(dict.fromkeys(df["method"]))
    return [m for m in known if m in present] + [m for m in present if m not in known]


def fmt(est: stats.Estimate, metric: str) -> str:
    """`mean [low, high]`, rounded to what the cell's n supports (metrics.format_estimate)."""
    return format_estimate(est.mean, est.ci_low, est.ci_high, est.n, metric)


def interval_table(df: pd.DataFrame, metrics: list[str], tasks: list[str] | None = None,
                   methods: list[str] | None = None) -> str:
    """Markdown: one row per method, a column per task x metric, `mean [95% CI]`; n per task in the
    header (cases; seeds per row in the Method cell when more than one)."""
    tasks = tasks or sorted(df["task"].unique(), key=lambda t: (t == "zsre", t))
    methods = methods or methods_in_order(df)
    cols, header = [], ["Method"]
    for t in tasks:
        n = df[df["task"] == t]["case_id"].nunique()
        for m in order(metrics):
            if m in df and df[df["task"] == t][m].notna().any():
                cols.append((t, m))
                header.append(f"{t} {m} (n={n})")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    for method in methods:
        cells = [cell(df, method, t, m) for t, m in cols]
        seeds = max((c.seeds for c in cells if c is not None), default=1)
        name = method + (f" ({seeds} seeds)" if seeds > 1 else "")
        lines.append("| " + " | ".join([name] + [fmt(c.est, m) if c else "–" for c, (_, m) in zip(cells, cols)]) + " |")
    return "\n".join(lines)


def long_table(df: pd.DataFrame, metrics: list[str], tasks: list[str] | None = None,
               methods: list[str] | None = None) -> str:
    """Markdown, one row per task x metric and a column per method (`mean [95% CI]`): readable
    when there are many metrics; n is the number of cases of the task."""
    tasks = tasks or sorted(df["task"].unique(), key=lambda t: (t == "zsre", t))
    methods = methods or methods_in_order(df)
    heads = []
    for method in methods:
        seeds = df[df["method"] == method]["seed"].nunique()
        heads.append(method + (f" ({seeds} seeds)" if seeds > 1 else ""))
    lines = ["| task | metric | n | " + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * len(methods)]
    for t in tasks:
        n = df[df["task"] == t]["case_id"].nunique()
        for m in order(metrics):
            cells = [cell(df, method, t, m) for method in methods]
            if any(cells):
                lines.append(f"| {t} | {m} | {n} | " + " | ".join(fmt(c.est, m) if c else "–" for c in cells) + " |")
    return "\n".join(lines)


def difference_table(df: pd.DataFrame, a: str, b: str, metrics: list[str], tasks: list[str] | None = None) -> str:
    """Markdown: `a - b` per task and metric with the paired 95% interval and n."""
    tasks = tasks or sorted(df["task"].unique(), key=lambda t: (t == "zsre", t))
    lines = [f"| task | metric | {a} - {b} [95% paired CI] | n |", "|---|---|---:|---:|"]
    for t in tasks:
        for m in order(metrics):
            d = paired_difference(df, a, b, t, m)
            if d is not None and d.n:
                lines.append(f"| {t} | {m} | {fmt(d, m)} | {d.n} |")
    return "\n".join(lines)

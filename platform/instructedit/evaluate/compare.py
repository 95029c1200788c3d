"""Methods compared on the same cases: seeds aggregated, intervals, paired differences.

Input: evaluation folders (what `instructedit evaluate --out DIR` writes: cases.parquet plus
run.json with the method tags), found recursively under one root. Evaluations of one method that
differ only by training seed (tag `seed`) are one row: the value of a cell is the mean over seeds
of the mean over cases, and its interval resamples cases and seeds (stats.bootstrap on the seeds x
cases matrix). In a table, every cell of a task is over the same cases: those all its methods were
evaluated on (a note says how many were dropped). A difference between two methods uses the cases
both were evaluated on, paired.
Torch-free, like stats and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import order_tasks
from ..editor import methods as registry  # torch-free registry
from . import stats
from .metrics import TABLE_METRICS, edit_success, format_estimate, order

# Paired differences shown under a comparison when both methods are there: the instruction-trained
# editor against the same editor trained without instructions, and against the unedited model.
PAIRS = tuple((registry.get(a).display, registry.get(b).display)
              for a, b in (("instructedit", "multi-task"), ("instructedit", "pre-edit")))


@dataclass(frozen=True)
class Cell:
    est: stats.Estimate
    seeds: int


def labelled(cases: pd.DataFrame, tags: dict, source: str, name: str = "") -> pd.DataFrame:
    """One evaluation's per-case rows with the columns the tables group by: method (its `label` tag,
    else its `method` tag, else `name`), seed (tag `seed`), source (where the rows came from), and
    edit_success. The one labelling rule for evaluation folders and MLflow runs (analysis.cases)."""
    df = cases.copy()
    df["edit_success"] = [edit_success(r) for r in df.to_dict("records")]
    # a label names variants of one method apart (e.g. two InstructEdit configs in one table)
    df["method"] = tags.get("label") or tags.get("method") or name or source
    df["seed"] = "" if tags.get("seed") is None else str(tags["seed"])
    df["source"] = source
    return df


def read_cases(root: str | Path) -> pd.DataFrame:
    """Every evaluation under `root` -> one long frame: method, seed, split, task, case_id, metrics."""
    frames = []
    for path in sorted(Path(root).rglob("cases.parquet")):
        info = json.loads((path.parent / "run.json").read_text()) if (path.parent / "run.json").exists() else {}
        df = pd.read_parquet(path)
        if not df.empty:
            frames.append(labelled(df, info.get("tags", {}), str(path.parent), path.parent.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _matrix(df: pd.DataFrame, metric: str, case_ids: list[str] | None = None,
            seeds: list | None = None) -> tuple[np.ndarray, list[str]]:
    """(seeds, cases) values of one method, task and metric; cases (and `seeds`, when given) in a
    fixed order."""
    wide = df.pivot_table(index="seed", columns="case_id", values=metric, aggfunc="mean")
    cases = case_ids if case_ids is not None else sorted(wide.columns)
    wide = wide.reindex(columns=cases)
    if seeds is not None:
        wide = wide.reindex(index=seeds)
    return wide.to_numpy(dtype=float), cases


def _seeds_with(df: pd.DataFrame, metric: str) -> set:
    return set(df.loc[df[metric].notna(), "seed"])


def cell(df: pd.DataFrame, method: str, task: str, metric: str, case_ids: list[str] | None = None) -> Cell | None:
    """One method's value of `metric` on `task`: over `case_ids` when given (the cases every method of
    a table shares), else over every case the method was evaluated on."""
    sub = df[(df["method"] == method) & (df["task"] == task)]
    if case_ids is not None:
        sub = sub[sub["case_id"].isin(case_ids)]
    if metric not in sub or sub[metric].isna().all():
        return None
    m, _ = _matrix(sub, metric, sorted(case_ids) if case_ids is not None else None)
    return Cell(stats.bootstrap(m), m.shape[0])


@dataclass(frozen=True)
class Common:
    """The cases of one task that every method shown with any case of it was evaluated on."""

    case_ids: list[str]
    total: int  # cases of the task any shown method was evaluated on

    @property
    def dropped(self) -> int:
        return self.total - len(self.case_ids)


def common_cases(df: pd.DataFrame, task: str, methods: list[str]) -> Common:
    """A table compares methods on the same records: per task, the intersection of the case ids of
    the methods that have the task at all (a method without any of its cases shows "–" instead of
    emptying the task)."""
    sub = df[(df["task"] == task) & df["method"].isin(methods)]
    sets = [set(g["case_id"]) for _, g in sub.groupby("method")]
    common = sorted(set.intersection(*sets)) if sets else []
    return Common(common, sub["case_id"].nunique())


def _dropped_note(commons: dict[str, Common]) -> str:
    dropped = [f"{t} {c.dropped} of {c.total}" for t, c in commons.items() if c.dropped]
    if not dropped:
        return ""
    return ("\n\nCells use only the cases every method shown was evaluated on; cases dropped for lack of "
            "overlap: " + ", ".join(dropped) + ".")


def paired_difference(df: pd.DataFrame, a: str, b: str, task: str, metric: str,
                      same_editors: bool = False) -> stats.Estimate | None:
    """mean(a) - mean(b) over the cases of `task` both methods were evaluated on, paired over cases.
    `same_editors`: a and b are the same trained editors under two conditions (seed s of a is seed s
    of b), so seeds are paired too, over the seeds both sides have."""
    sa, sb = (df[(df["method"] == x) & (df["task"] == task)] for x in (a, b))
    if metric not in df or sa.empty or sb.empty:
        return None
    common = common_cases(df, task, [a, b]).case_ids
    if not common:
        return None
    seeds = sorted(_seeds_with(sa, metric) & _seeds_with(sb, metric)) if same_editors else None
    if seeds is not None and not seeds:
        return None
    ma, _ = _matrix(sa, metric, common, seeds)
    mb, _ = _matrix(sb, metric, common, seeds)
    return stats.paired(ma, mb, same_seeds=same_editors)


def instruction_gap(df: pd.DataFrame, method: str, task: str, metric: str) -> stats.Estimate | None:
    """mean(`metric`_instructed) - mean(`metric`) of one method on `task`, paired over the cases
    that have both: what putting the task instruction on the probe adds. An editor whose edits
    lean on the instruction has a large gap; one that holds where users ask (plain), a small one."""
    inst = metric + "_instructed"
    sub = df[(df["method"] == method) & (df["task"] == task)]
    if sub.empty or metric not in sub or inst not in sub or sub[metric].isna().all() or sub[inst].isna().all():
        return None
    cases = sorted(set(sub.loc[sub[metric].notna(), "case_id"]) & set(sub.loc[sub[inst].notna(), "case_id"]))
    if not cases:
        return None
    seeds = sorted(_seeds_with(sub, inst) & _seeds_with(sub, metric))  # one editor per seed: paired
    a, _ = _matrix(sub, inst, cases, seeds)
    b, _ = _matrix(sub, metric, cases, seeds)
    return stats.paired(a, b, same_seeds=True)


def gap_table(df: pd.DataFrame, metrics: list[str], tasks: list[str] | None = None,
              methods: list[str] | None = None) -> str:
    """Markdown: per task and plain metric that has an instructed variant, each method's
    instructed - plain difference with its paired 95% interval and n ("" when no metric has both)."""
    tasks = tasks or order_tasks(df["task"].unique())
    methods = methods or methods_in_order(df)
    plain = [m for m in order(metrics) if not m.endswith("_instructed") and m + "_instructed" in df]
    lines = []
    for t in tasks:
        for m in plain:
            gaps = [instruction_gap(df, method, t, m) for method in methods]
            if any(g is not None and g.n for g in gaps):
                n = max(g.n for g in gaps if g is not None)
                lines.append(f"| {t} | {m} | {n} | " + " | ".join(fmt(g, m) if g is not None and g.n else "–"
                                                                 for g in gaps) + " |")
    if not lines:
        return ""
    return "\n".join(["| task | metric | n | " + " | ".join(methods) + " |",
                      "|---|---|---:|" + "---:|" * len(methods)] + lines)


def methods_in_order(df: pd.DataFrame) -> list[str]:
    """The method registry's order of the methods present (display names), others after."""
    known = [m.display for m in registry.METHODS]
    present = list(dict.fromkeys(df["method"]))
    return [m for m in known if m in present] + [m for m in present if m not in known]


def fmt(est: stats.Estimate, metric: str) -> str:
    """`mean [low, high]`, rounded to what the cell's n supports (metrics.format_estimate)."""
    return format_estimate(est.mean, est.ci_low, est.ci_high, est.n, metric)


def interval_table(df: pd.DataFrame, metrics: list[str], tasks: list[str] | None = None,
                   methods: list[str] | None = None) -> str:
    """Markdown: one row per method, a column per task x metric, `mean [95% CI]`, every cell of a
    task over the cases all methods share (`common_cases`); that n per task in the header (seeds
    per row in the Method cell when more than one), and a note of the cases dropped."""
    tasks = tasks or order_tasks(df["task"].unique())
    methods = methods or methods_in_order(df)
    commons = {t: common_cases(df, t, methods) for t in tasks}
    cols = [(t, m) for t in tasks for m in order(metrics) if m in df and df[df["task"] == t][m].notna().any()]
    grid = {method: [cell(df, method, t, m, commons[t].case_ids) for t, m in cols] for method in methods}
    # n of a column: the shared cases that have the metric's probe (the same for every method)
    ns = [max((grid[method][i].est.n for method in methods if grid[method][i]), default=0) for i in range(len(cols))]
    header = ["Method"] + [f"{t} {m} (n={n})" for (t, m), n in zip(cols, ns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    for method in methods:
        cells = grid[method]
        seeds = max((c.seeds for c in cells if c is not None), default=1)
        name = method + (f" ({seeds} seeds)" if seeds > 1 else "")
        lines.append("| " + " | ".join([name] + [fmt(c.est, m) if c else "–" for c, (_, m) in zip(cells, cols)]) + " |")
    return "\n".join(lines) + _dropped_note({t: commons[t] for t in dict.fromkeys(t for t, _ in cols)})


def long_table(df: pd.DataFrame, metrics: list[str], tasks: list[str] | None = None,
               methods: list[str] | None = None) -> str:
    """Markdown, one row per task x metric and a column per method (`mean [95% CI]`): readable
    when there are many metrics. Every cell of a task is over the cases all methods share
    (`common_cases`); n is how many of them have the metric, and a note says how many cases were
    dropped."""
    tasks = tasks or order_tasks(df["task"].unique())
    methods = methods or methods_in_order(df)
    heads = []
    for method in methods:
        seeds = df[df["method"] == method]["seed"].nunique()
        heads.append(method + (f" ({seeds} seeds)" if seeds > 1 else ""))
    lines = ["| task | metric | n | " + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * len(methods)]
    shown = {}
    for t in tasks:
        common = common_cases(df, t, methods)
        if common.total and not common.case_ids:
            shown[t] = common  # no case is shared: no row, but the note says so
        for m in order(metrics):
            cells = [cell(df, method, t, m, common.case_ids) for method in methods]
            if any(cells):
                shown[t] = common
                # n of the metric: the shared cases that have its probe (portability: not every record)
                n = max(c.est.n for c in cells if c)
                lines.append(f"| {t} | {m} | {n} | " + " | ".join(fmt(c.est, m) if c else "–" for c in cells) + " |")
    return "\n".join(lines) + _dropped_note(shown)


def difference_table(df: pd.DataFrame, a: str, b: str, metrics: list[str], tasks: list[str] | None = None,
                     same_editors: bool = False) -> str:
    """Markdown: `a - b` per task and metric with the paired 95% interval and n (`same_editors`:
    see paired_difference)."""
    tasks = tasks or order_tasks(df["task"].unique())
    lines = [f"| task | metric | {a} - {b} [95% paired CI] | n |", "|---|---|---:|---:|"]
    for t in tasks:
        for m in order(metrics):
            d = paired_difference(df, a, b, t, m, same_editors)
            if d is not None and d.n:
                lines.append(f"| {t} | {m} | {fmt(d, m)} | {d.n} |")
    return "\n".join(lines)


def comparison(df: pd.DataFrame, metrics: list[str] | None = None) -> str:
    """Markdown sections of per-case results: the methods (`long_table`), each pair of PAIRS
    present as a paired difference, and every method's instructed - plain gap."""
    metrics = list(metrics or TABLE_METRICS)
    text = "## Methods (mean [95% bootstrap CI], x100 except dd)\n\n" + long_table(df, metrics)
    present = set(df["method"])
    for a, b in PAIRS:
        if {a, b} <= present:
            text += f"\n\n## {a} - {b}, paired\n\n" + difference_table(df, a, b, metrics)
    gaps = gap_table(df, metrics)
    if gaps:
        # The headline metrics are plain; this says how much of each method's edit success needs
        # the instruction on the probe (instructed - plain, per method, paired over its cases).
        text += "\n\n## Instructed - plain probes, paired (per method)\n\n" + gaps
    return text

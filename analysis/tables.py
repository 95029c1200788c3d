"""The paper's tables from the tidy run table (analysis.runs): Table 3 and Table 1 shapes.

Values are shown x100 (shares; `dd`, a KL, as it is), rounded to what the number of cases n behind
the cell supports (instructedit.evaluate.metrics.format_value, the platform's one rounding rule); a
cell from one run with a logged interval also carries its 95% interval and n. The best value of each column is marked: bold in Markdown and HTML, a trailing `*`
in CSV. Direction comes from the metric registry (`dd` lower-is-better). Baseline rows (Pre-edit)
are shown but never marked best. Per task, plain-probe metrics come first, instructed ones after.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from instructedit import config
from instructedit.editor import methods as registry
from instructedit.evaluate import metrics as metric_registry
from instructedit.evaluate.metrics import format_value

from .runs import higher_is_better, split_tasks

METHODS = tuple(m.display for m in registry.METHODS)  # row order: the method registry's
BASELINES = tuple(m.display for m in registry.METHODS if m.reference)  # shown, never marked best
SINGLE_TASK = tuple(m.display for m in registry.METHODS if m.single_task)  # one editor per task
SINGLE_TASK_MODES = tuple(m.name for m in registry.METHODS if m.single_task)
INSTRUCTED_MODES = tuple(m.name for m in registry.METHODS if m.instructed)  # trained with instructions
# Table columns: the metric registry's table metrics (`in_tables`) in its order, plain probes
# (headline) first, then the same questions with the task instruction (every method has both).
METRICS = metric_registry.TABLE_METRICS
PLAIN_METRICS = tuple(m for m in METRICS if metric_registry.METRICS[m].headline)


def hold_out_tasks() -> tuple[str, ...]:
    """The task registry's hold-out tasks (YAML `hold_out: true`): the default of every table."""
    return tuple(config.task_names(hold_out=True))


def order_tasks(tasks, hold_out=None) -> list[str]:
    """Registry tasks in its order (task YAML `order`), others alphabetically after them, hold-out
    tasks last (`hold_out`: those tasks; None = the registry's)."""
    return config.order_tasks(tasks, hold_out)


def order_metrics(metrics, preferred=METRICS) -> list[str]:
    rank = {m: i for i, m in enumerate(preferred)}
    return sorted(dict.fromkeys(metrics), key=lambda m: (rank.get(m, len(rank)), m))


@dataclass
class Table:
    """Raw values (fractions; rows x MultiIndex(task, metric) columns) and how to show them."""

    title: str
    values: pd.DataFrame
    row_label: str = "Method"
    baselines: tuple[str, ...] = BASELINES
    hold_out: tuple[str, ...] = field(default_factory=hold_out_tasks)
    note: str = ""
    run_ids: dict = field(default_factory=dict)  # (row, task, metric) -> [run ids] behind the cell
    # (row, task, metric) -> {"ci_low", "ci_high", "n"} (NaN where not logged)
    intervals: dict = field(default_factory=dict)

    def n(self, row, col) -> float | None:
        n = self.intervals.get((row, *col), {}).get("n")
        return None if n is None or pd.isna(n) else float(n)

    @property
    def empty(self) -> bool:
        return self.values.empty or bool(self.values.isna().all().all())

    def best(self) -> pd.DataFrame:
        """True where a cell is the best of its column (ties all marked; baselines never)."""
        mask = pd.DataFrame(False, index=self.values.index, columns=self.values.columns)
        contenders = [r for r in self.values.index if r not in self.baselines]
        for col in self.values.columns:
            vals = self.values.loc[contenders, col].dropna()
            if len(vals) < 1:
                continue
            target = vals.max() if higher_is_better(col[1]) else vals.min()
            for r in vals.index:
                if math.isclose(vals[r], target, rel_tol=0, abs_tol=1e-12):
                    mask.loc[r, col] = True
        return mask

    def formatted(self) -> pd.DataFrame:
        """Cell text: the value rounded by the n behind it (`format_value`)."""
        out = self.values.astype(object).copy()
        for r in self.values.index:
            for c in self.values.columns:
                out.loc[r, c] = format_value(self.values.loc[r, c], self.n(r, c), c[1])
        return out

    def interval_text(self, row, col) -> str:
        """`lo–hi, n=N` for a cell with a logged interval, `n=N` with n only, else ''."""
        iv = self.intervals.get((row, *col), {})
        n = self.n(row, col)
        lo, hi = iv.get("ci_low"), iv.get("ci_high")
        parts = []
        if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
            parts.append(f"{format_value(lo, n, col[1])}–{format_value(hi, n, col[1])}")
        if n is not None:
            parts.append(f"n={int(n)}")
        return ", ".join(parts)

    def column_names(self) -> list[str]:
        return [f"{t}/{m}" for t, m in self.values.columns]

    # ------------------------------------------------------------------------------- renderings
    def to_markdown(self) -> str:
        cells, best = self.formatted(), self.best()
        header = [self.row_label] + self.column_names()
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(cells.columns)) + "|"]
        for r in cells.index:
            row = [str(r)] + [f"**{cells.loc[r, c]}**" if best.loc[r, c] else cells.loc[r, c]
                              for c in cells.columns]
            lines.append("| " + " | ".join(row) + " |")
        out = f"**{self.title}** (x100, rounded to what n supports; best per column in bold)\n\n" + "\n".join(lines) + "\n"
        if self.note:
            out += f"\n{self.note}\n"
        return out

    def to_csv(self, path: str | Path | None = None) -> str:
        cells, best = self.formatted(), self.best()
        marked = cells.copy()
        for c in cells.columns:
            marked[c] = [v + "*" if b else v for v, b in zip(cells[c], best[c])]
        marked.columns = self.column_names()
        marked.index.name = self.row_label
        text = marked.to_csv()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_html(self, links: dict[str, str] | None = None) -> str:
        """A <table> with a two-level header (task, metric); `links` maps a row label to a URL."""
        cells, best = self.formatted(), self.best()
        tasks = list(dict.fromkeys(t for t, _ in cells.columns))
        e = html.escape
        head1 = [f'<th rowspan="2">{e(self.row_label)}</th>']
        for t in tasks:
            span = sum(1 for tt, _ in cells.columns if tt == t)
            label = f"{t} (hold-out)" if t in self.hold_out else t
            head1.append(f'<th colspan="{span}">{e(label)}</th>')
        instr = ' class="instr"'
        head2 = [f"<th{instr if m.endswith('_instructed') else ''}>{e(_short(m))}"
                 f"{' ↓' if not higher_is_better(m) else ''}</th>" for _, m in cells.columns]
        body = []
        for r in cells.index:
            name = e(str(r))
            if links and r in links:
                name = f'<a href="{e(links[r])}">{name}</a>'
            tds = []
            for c in cells.columns:
                v = e(cells.loc[r, c])
                if best.loc[r, c]:
                    v = f"<b>{v}</b>"
                ci = self.interval_text(r, c)
                if ci:  # the 95% interval and n under the value
                    v += f'<br><span class="ci">{e(ci)}</span>'
                tds.append(f'<td class="best">{v}</td>' if best.loc[r, c] else f"<td>{v}</td>")
            body.append(f"<tr><th>{name}</th>{''.join(tds)}</tr>")
        return (
            f'<table class="results"><caption>{e(self.title)} (x100, rounded to what n supports; '
            "95% interval and n under each value where logged; best per column in bold)</caption>"
            f"<thead><tr>{''.join(head1)}</tr><tr>{''.join(head2)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )

    def save(self, out_dir: str | Path, stem: str) -> dict[str, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "html": out_dir / f"{stem}.html"}
        paths["md"].write_text(self.to_markdown())
        self.to_csv(paths["csv"])
        paths["html"].write_text(self.to_html())
        return paths


def _short(metric: str) -> str:
    """Column label: `reliability_instructed` -> `reliability (instr.)`."""
    return metric[: -len("_instructed")] + " (instr.)" if metric.endswith("_instructed") else metric


def cell_interval(g: pd.DataFrame) -> dict:
    """The interval of a cell: the run's own when one run is behind it. Several runs' intervals do
    not combine into one: then no interval, and n only when every run had the same n."""
    cols = [c for c in ("ci_low", "ci_high", "n") if c in g.columns]
    if not cols:
        return {}
    if g["run_id"].nunique() == 1:
        r = g.iloc[-1]
        return {c: r[c] for c in cols}
    ns = g["n"].dropna().unique() if "n" in g.columns else []
    # cases per run, when every run evaluated as many (the same test records, several editors)
    return {"ci_low": float("nan"), "ci_high": float("nan"), "n": float(ns[0]) if len(ns) == 1 else float("nan")}


# ------------------------------------------------------------------------------------ selection
def prefer(rows: pd.DataFrame, *conditions) -> pd.DataFrame:
    """Narrow `rows` by each condition in turn, skipping a condition that would leave nothing."""
    for cond in conditions:
        narrowed = rows[cond(rows)]
        if not narrowed.empty:
            rows = narrowed
    return rows


# The preferences every table applies when several runs report one cell (tables._cell_rows,
# cases.choose): seen (or no) instructions over unseen ones, first (an unseen re-evaluation of an
# editor is the seen-vs-unseen table's, never a Table 3 cell), and runs outside studies over trials.
def not_unseen(r: pd.DataFrame) -> pd.Series:
    return r["instruction_setting"] != "unseen"


def outside_studies(r: pd.DataFrame) -> pd.Series:
    return r["study"] == ""


def _eval_rows(tidy: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per-task evaluation rows of one split. Accepts a reduced tidy frame (only some tag columns):
    missing tag columns count as empty."""
    tidy = tidy.copy()
    for col in ("kind", "method", "mode", "tasks", "study", "instruction_setting"):
        if col not in tidy.columns:
            tidy[col] = ""
        tidy[col] = tidy[col].fillna("").astype(str)
    if "n_train_tasks" not in tidy.columns:
        tidy["n_train_tasks"] = tidy["tasks"].map(lambda s: len(split_tasks(s)))
    rows = tidy[(tidy["split"] == split) & (tidy["task"] != "avg") & (tidy["task"] != "")]
    return rows[~rows["kind"].isin(["report", "optimize"])]


def _cell_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Which of several runs reporting the same cell count: not_unseen, then evaluation runs over
    training runs, then outside_studies."""
    return prefer(rows, not_unseen, lambda r: r["kind"] == "eval", outside_studies)


def _pivot(cells: dict, rows: list, tasks: list, metrics_by_task: dict) -> pd.DataFrame:
    cols = pd.MultiIndex.from_tuples([(t, m) for t in tasks for m in metrics_by_task[t]], names=["task", "metric"])
    df = pd.DataFrame(float("nan"), index=pd.Index(rows), columns=cols)
    for (r, t, m), v in cells.items():
        if (t, m) in df.columns and r in df.index:
            df.loc[r, (t, m)] = v
    return df


def _columns(rows: pd.DataFrame, tasks, metrics, hold_out):
    present = rows[rows["metric"].isin(metrics)]
    tasks = order_tasks(tasks if tasks else present["task"].unique(), hold_out)
    metrics_by_task = {
        t: order_metrics(present.loc[present["task"] == t, "metric"].unique(), metrics) for t in tasks
    }
    tasks = [t for t in tasks if metrics_by_task[t]]
    return tasks, metrics_by_task


def table3(tidy: pd.DataFrame, split: str = "test", tasks=None, metrics=METRICS, methods=METHODS,
           hold_out=None) -> Table:
    """Multi-task setting + hold-out task: rows = methods (the `method` tag), columns = task x metric.

    A cell averages the runs of that method reporting `<split>/<task>/<metric>` (see _cell_rows). For
    MEND (single-task) a cell prefers the editor trained on that very task.
    """
    hold_out = hold_out_tasks() if hold_out is None else tuple(hold_out)
    rows = _eval_rows(tidy, split)
    rows = rows[rows["method"].isin(methods)]
    tasks, metrics_by_task = _columns(rows, tasks, metrics, hold_out)
    cells, run_ids, intervals = {}, {}, {}
    for (method, task, metric), g in rows.groupby(["method", "task", "metric"], sort=False):
        if task not in metrics_by_task or metric not in metrics_by_task[task]:
            continue
        if method in SINGLE_TASK:
            g = prefer(g, lambda r, t=task: r["tasks"].map(split_tasks).map(lambda ts: ts == [t]))
        g = _cell_rows(g)
        cells[(method, task, metric)] = float(g["value"].mean())
        run_ids[(method, task, metric)] = sorted(g["run_id"].unique())
        intervals[(method, task, metric)] = cell_interval(g)
    present = [m for m in methods if any(k[0] == m for k in cells)]
    values = _pivot(cells, present, tasks, metrics_by_task)
    return Table(
        title=f"Table 3 shape: multi-task setting and hold-out task ({split})",
        values=values, row_label="Method", hold_out=tuple(hold_out), run_ids=run_ids, intervals=intervals,
        note="Hold-out tasks are never trained on. Values are means over the runs behind each cell; "
             "(instr.) columns ask the same questions prefixed by the task instruction.",
    )


def table1(tidy: pd.DataFrame, split: str = "test", tasks=None,
           metrics=("reliability", "generalization", "es", "reliability_instructed", "es_instructed"),
           hold_out=None) -> Table:
    """Single-task editors (rows: the task each was trained on) applied to every task (columns)."""
    hold_out = hold_out_tasks() if hold_out is None else tuple(hold_out)
    rows = _eval_rows(tidy, split)
    rows = rows[rows["mode"].isin(SINGLE_TASK_MODES) & (rows["n_train_tasks"] == 1)]
    tasks, metrics_by_task = _columns(rows, tasks, metrics, hold_out)
    cells, run_ids, intervals = {}, {}, {}
    for (train_task, task, metric), g in rows.groupby(["tasks", "task", "metric"], sort=False):
        if task not in metrics_by_task or metric not in metrics_by_task[task]:
            continue
        g = _cell_rows(g)
        label = f"trained on {train_task}"
        cells[(label, task, metric)] = float(g["value"].mean())
        run_ids[(label, task, metric)] = sorted(g["run_id"].unique())
        intervals[(label, task, metric)] = cell_interval(g)
    train_tasks = order_tasks(rows["tasks"].unique(), hold_out)
    present = [f"trained on {t}" for t in train_tasks if any(k[0] == f"trained on {t}" for k in cells)]
    values = _pivot(cells, present, tasks, metrics_by_task)
    return Table(
        title=f"Table 1 shape: single-task editors applied to other tasks ({split})",
        values=values, row_label="Editor", baselines=(), hold_out=tuple(hold_out), run_ids=run_ids,
        intervals=intervals,
        note="Each row is a MEND editor trained on one task; the diagonal is in-distribution.",
    )

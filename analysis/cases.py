"""Table 3 from the per-case results in MLflow: seeds aggregated, 95% intervals, n, paired differences.

Every evaluation logs `eval/<split>/cases.parquet` to its run: `instructedit evaluate` to the editor's
training run (or a new eval run that names it in the tag `editor_run`), a study trial to its child
run. This module downloads those files, labels the rows with the run's tags the way evaluation
folders are labelled (compare.labelled: the `label` tag, else `method`; `seed`, else the training
run's), keeps one evaluation per row, seed and task, and renders them with
instructedit.evaluate.compare, so the report and `evaluate --compare-table` share one bootstrap.
Above the tables: the budget of each row, read from the training runs behind its evaluations.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from instructedit import tracking
from instructedit.config import order_tasks
from instructedit.editor import methods as registry
from instructedit.evaluate import compare
from instructedit.evaluate.metrics import TABLE_METRICS

from .tables import not_unseen, outside_studies, prefer

CASES_FILE = "cases.parquet"
TRAINED_KINDS = ("train", "trial")  # runs that trained an editor (an evaluation logged into one is theirs)
BUDGET_TAGS = ("seed", "train_edits", "checkpoint_edits", "best_step")  # train/run.py
NOT_LOGGED = "not logged"


@dataclass
class CaseTables:
    cases: pd.DataFrame  # the chosen evaluations' rows (compare.read_cases' columns; source = run id)
    runs: pd.DataFrame  # one row per run with per-case results: row name, seed, budget tags, used
    notes: list[str] = field(default_factory=list)
    # every run's rows before `choose`: the studies' tables (analysis.studies_cases) need the unseen
    # evaluations and the per-task-set editors Table 3 leaves out, without downloading them again
    every: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def run_ids(self) -> set[str]:
        """Every run with per-case results (used or left out): the metric tables skip them."""
        return set(self.runs["run_id"])

    @property
    def empty(self) -> bool:
        return self.cases.empty


def artifact_dir(split: str) -> str:
    return f"eval/{split}"  # evaluate/runner.log_results


def has_cases(run_id: str, split: str, tracking_uri: str | None = None) -> bool:
    try:
        listed = tracking.list_artifacts(run_id, artifact_dir(split), tracking_uri=tracking_uri)
    except Exception:  # noqa: BLE001 - a run whose artifact store is gone has no per-case results here
        return False
    return f"{artifact_dir(split)}/{CASES_FILE}" in listed


def training_tags(run: pd.Series, index: pd.DataFrame, tracking_uri: str | None = None) -> dict:
    """The budget tags of the training run behind an evaluation: the run itself when the evaluation
    was logged into it, else its `editor_run` (looked up in the store when outside `index`); {} for
    untrained methods or a training run that cannot be read."""
    if run["kind"] in TRAINED_KINDS:
        return {k: run.get(k, "") for k in BUDGET_TAGS}
    rid = run.get("editor_run", "")
    if not rid:
        return {}
    found = index[index["run_id"] == rid]
    if len(found):
        return {k: found.iloc[0].get(k, "") for k in BUDGET_TAGS}
    try:
        tags = tracking.get_run(rid, tracking_uri).data.tags
    except Exception:  # noqa: BLE001 - shown as "not logged" in the budget header
        return {}
    return {k: tags.get(k, "") for k in BUDGET_TAGS}


def load(index: pd.DataFrame, split: str = "test", tracking_uri: str | None = None) -> CaseTables:
    """The per-case results of the runs in `index` (analysis.runs.run_index) on `split`."""
    index = index[index["kind"] != "report"] if len(index) else index
    frames, runs = [], []
    for _, r in index.iterrows():
        if not has_cases(r["run_id"], split, tracking_uri):
            continue
        train = training_tags(r, index, tracking_uri)
        seed = r["seed"] or train.get("seed", "")
        with tempfile.TemporaryDirectory() as tmp:
            local = tracking.download_artifacts(r["run_id"], f"{artifact_dir(split)}/{CASES_FILE}", dst=tmp,
                                                tracking_uri=tracking_uri)
            df = pd.read_parquet(local)
        if df.empty:
            continue
        df = compare.labelled(df, {"label": r["label"], "method": r["method"], "seed": seed}, r["run_id"],
                              r["run_name"])
        frames.append(df)
        runs.append({"run_id": r["run_id"], "run_name": r["run_name"] or r["run_id"][:8],
                     "row": df["method"].iloc[0], "method_tag": r["method"], "seed": str(seed),
                     "tasks": r["tasks"], "study": r["study"], "instruction_setting": r["instruction_setting"],
                     "start_time": r["start_time"], "trained": bool(train), "editor_run": r["editor_run"],
                     **{k: str(train.get(k) or "") for k in BUDGET_TAGS if k != "seed"}})
    if not frames:
        return CaseTables(pd.DataFrame(), pd.DataFrame(columns=["run_id"]))
    every = pd.concat(frames, ignore_index=True)
    runs = pd.DataFrame(runs)
    cases, runs = choose(every, runs)
    notes = [f"{row} has no editor trained on {', '.join(tasks)}, so its cells there are left empty; Table 1 "
             "shows each of its editors on every task." for row, tasks in untrained_tasks(every, cases, runs).items()]
    left = runs[~runs["used"]]
    if len(left):
        notes.append(f"{len(left)} evaluation run(s) with per-case results left out of Table 3, superseded by a "
                     "later or preferred evaluation of the same row, seed and task: " + ", ".join(left["run_name"]))
    return CaseTables(cases, runs, notes, every)


def choose(cases: pd.DataFrame, runs: pd.DataFrame, own_task: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One evaluation per (row, seed, task), so a rerun is not averaged in as another seed. Like the
    metric tables (tables._cell_rows): tables.not_unseen, then tables.outside_studies; a single-task
    method's editor trained on the task shown; then the latest run. Chosen per (row, seed, task): a
    preferred run that lacks a task (an unseen re-evaluation on the training tasks only) must not hide
    another run's cells of it. `own_task` False: rows that are each one editor (Table 1's, one per
    training task) keep their cells on every task.
    -> (the chosen runs' rows, `runs` with a `used` column)."""
    runs = runs.copy()
    chosen = []
    for _, of_row in runs.groupby("row", sort=False):
        rows = cases[cases["source"].isin(of_row["run_id"])]
        for (seed, task), g in rows.groupby(["seed", "task"], sort=False):
            cand = of_row[of_row["run_id"].isin(g["source"].unique())]
            cand = prefer(cand, not_unseen, outside_studies)
            method = registry.by_display(cand["method_tag"].iloc[0])
            if own_task and method is not None and method.single_task:
                # The row is "the editor trained on the task shown". On a task none of its editors
                # trained on (the hold-out ZsRE) there is no such editor: picking one of the others
                # would make the cell whichever ran last. Table 1 shows each of them there.
                cand = cand[cand["tasks"] == task]
                if cand.empty:
                    continue
            best = cand.sort_values("start_time", kind="stable")["run_id"].iloc[-1]
            chosen.append(g[g["source"] == best])
    kept = pd.concat(chosen, ignore_index=True)
    runs["used"] = runs["run_id"].isin(set(kept["source"]))
    return kept, runs


def untrained_tasks(every: pd.DataFrame, kept: pd.DataFrame, runs: pd.DataFrame) -> dict[str, list[str]]:
    """Single-task rows -> the tasks `choose` left empty because none of the row's editors trained on
    them (cases on them exist, from editors trained on other tasks)."""
    out = {}
    for row, of_row in runs.groupby("row", sort=False):
        method = registry.by_display(of_row["method_tag"].iloc[0])
        if method is None or not method.single_task:
            continue
        seen = set(every.loc[every["source"].isin(of_row["run_id"]), "task"])
        missing = seen - set(kept.loc[kept["source"].isin(of_row["run_id"]), "task"])
        if missing:
            out[row] = order_tasks(missing)
    return out


def _per_seed(values: list[str], names: list[str] | None = None) -> str:
    """One value when every editor has it, else each one's in seed order (named, when `names` gives
    each editor's name); missing ones marked."""
    shown = [v or "?" for v in values]
    if not any(values):
        return NOT_LOGGED
    if len(set(shown)) == 1:
        return shown[0]
    return ", ".join(f"{v} ({n})" for v, n in zip(shown, names)) if names else ", ".join(shown)


def budget_table(ct: CaseTables) -> tuple[str, str]:
    """Markdown of each row's budget (seeds; training edits of the run and of the selected checkpoint;
    the selected step, per seed where they differ) and a note when trained rows differ in budget."""
    used = ct.runs[ct.runs["used"]]
    lines = ["| Method | seeds | training edits | selected step | edits seen by the selected checkpoint |",
             "|---|---|---:|---:|---:|"]
    budgets = {}
    for row in compare.methods_in_order(ct.cases):
        runs = used[used["row"] == row]
        method = registry.by_display(runs["method_tag"].iloc[0])
        # One training run per editor: per seed (a seed evaluated on several tasks by several runs is
        # one editor), and for a single-task row per seed and training task.
        single = method is not None and method.single_task
        rank = {t: i for i, t in enumerate(order_tasks(runs["tasks"].unique()))}  # table order of the editors
        per_seed = (runs.assign(_seed=runs["seed"].str.zfill(12), _task=runs["tasks"].map(rank))  # 2 before 10
                    .sort_values(["_seed", "_task"], kind="stable")
                    .drop_duplicates(["seed", "tasks"] if single else "seed"))
        seeds = list(dict.fromkeys(s for s in per_seed["seed"] if s))
        seed_text = f"{len(seeds)} ({', '.join(seeds)})" if seeds else "–"
        if method is not None and not method.trained:
            lines.append(f"| {row} | {seed_text} | 0 (no trained editor) | – | – |")
            continue
        names = list(per_seed["tasks"]) if single else None
        if single:
            seed_text += f"; an editor per task ({', '.join(dict.fromkeys(names))})"
        edits = _per_seed(list(per_seed["train_edits"]), names)
        budgets[row] = edits
        lines.append(f"| {row} | {seed_text} | {edits} | {_per_seed(list(per_seed['best_step']), names)} | "
                     f"{_per_seed(list(per_seed['checkpoint_edits']), names)} |")
    note = ""
    if len(set(budgets.values())) > 1:
        note = ("Trained rows differ in training edits (" + "; ".join(f"{r}: {b}" for r, b in budgets.items())
                + "): they are not compared at one budget.")
    return "\n".join(lines), note


def markdown(ct: CaseTables, source: str) -> str:
    """The whole Markdown: where it came from, the budget header, then compare.comparison's tables."""
    budget, note = budget_table(ct)
    n_runs = int(ct.runs["used"].sum())
    parts = [
        "# Table 3 from per-case results",
        (f"{source}; {n_runs} evaluation run(s). Each cell is the mean over seeds of the mean over the cases "
         "every method of its task was evaluated on, with a 95% bootstrap interval over cases and seeds; "
         "differences are paired over the cases both methods share."),
        "## Budget (the training runs behind each row)",
        budget + (f"\n\n{note}" if note else ""),
        compare.comparison(ct.cases, list(TABLE_METRICS)),
    ]
    if ct.notes:
        parts.append("\n".join(f"Note: {n}" for n in ct.notes))
    return "\n\n".join(parts) + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write via a temporary file beside `path` and a rename: a reader never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

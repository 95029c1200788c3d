"""Table 1, seen vs unseen instructions and task scaling as tables from per-case results.

Table 3 (analysis.cases) keeps one evaluation per row, seed and task, preferring seen instructions
and runs outside studies, so it drops exactly what these two experiments compare: the unseen
evaluations of an InstructEdit editor, and editors trained on fewer tasks. Both tables start from
the rows cases.load already downloaded and labelled (CaseTables.every), keep one evaluation per
(arm, seed, task) with cases.choose, and render with instructedit.evaluate.compare, so every
interval comes from the one bootstrap (instructedit.evaluate.stats).

- Table 1: each single-task editor (one per training task; seeds of one task averaged) on every
  task it was tested on, the tasks it never saw beside its own, with Pre-edit as the reference.
- Seen vs unseen: per InstructEdit row and training-task set that has an unseen evaluation, its
  training tasks' cells evaluated with seen and with unseen instructions, and unseen - seen paired
  over the seeds and cases both settings share.
- Task scaling: InstructEdit editors trained on different task sets (the `tasks` tag), on the
  hold-out tasks (ZsRE); one row per set, fewest tasks first, and each set - the one before, paired
  over the cases both share; then each set on its own training tasks (a column per set), each set -
  the one before on the training tasks both share.

Which runs: InstructEdit ones trained on the task YAML pools (an editor trained on a named instruction
set, e.g. the instructions study's optimised arm, is another editor), outside studies or in a study
whose trials vary what the table compares; trials of other studies (hyperparameters, ConvSent
balancing) hold other things fixed at other values and would be averaged in as seeds.
"""

from __future__ import annotations

from itertools import pairwise

import pandas as pd
from instructedit.config import order_tasks, task_names
from instructedit.editor import methods as registry
from instructedit.evaluate import compare
from instructedit.evaluate.metrics import TABLE_METRICS

from . import cases
from .runs import split_tasks
from .tables import SINGLE_TASK

EDITOR = registry.get("instructedit").display
SET_PARAM = "params.data.instruction_set"  # train/run.py logs the flattened config; "" = the task YAML pools
SEEN, UNSEEN = "seen", "unseen"

TABLE1 = "table1_cases"
SEEN_UNSEEN = "seen_unseen_cases"
TASK_SCALING = "task_scaling_cases"
TITLES = {TABLE1: "Table 1 from per-case results",
          SEEN_UNSEEN: "Seen vs unseen instructions from per-case results",
          TASK_SCALING: "Task scaling from per-case results"}
REFERENCE = tuple(m.display for m in registry.METHODS if m.reference)  # the unedited model
# One line under each title (Markdown and the report page): what the table is.
CAPTIONS = {
    TABLE1: ("Single-task editors, each trained on one task, on every task they were tested on: the "
             "column of an editor's own task is in-distribution, the others are tasks it never saw."),
    SEEN_UNSEEN: ("The same InstructEdit editors on their training tasks, edited and probed with the "
                  "instructions seen in training and with held-out (unseen) ones; unseen - seen is "
                  "paired over the seeds and cases both were evaluated on."),
    TASK_SCALING: ("InstructEdit editors trained on growing sets of tasks, tested on the hold-out task(s) "
                   "they never trained on; each set is compared with the one before on the same cases, "
                   "then shown on its own training tasks."),
}
# Why a table is missing (a note on the page, never an error).
MISSING = {
    TABLE1: "no single-task editor with per-case results (`instructedit study table3-single`).",
    SEEN_UNSEEN: ("no InstructEdit evaluation with unseen instructions and per-case results (`instructedit "
                  "evaluate --run RUN_ID --instructions unseen --tasks counterfact recent convsent`, or the "
                  "instructions study's unseen arm)."),
    TASK_SCALING: ("needs InstructEdit editors trained on at least two task sets with per-case results on a "
                   "hold-out task (the task-scaling study)."),
}


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v)) or str(v).strip() in ("", "None", "nan")


def editor_runs(ct: cases.CaseTables, index: pd.DataFrame) -> pd.DataFrame:
    """InstructEdit runs with per-case results, each with `train_tasks` (its training tasks in table
    order, joined by commas) and `named` (trained on a named instruction set, not the YAML pools)."""
    runs = ct.runs[(ct.runs["method_tag"] == EDITOR) & (ct.runs["tasks"] != "")].copy()
    runs["train_tasks"] = runs["tasks"].map(lambda s: ",".join(order_tasks(split_tasks(s))))
    # An evaluation run logs eval.* params only: its instruction set is its editor run's.
    params = dict(zip(index["run_id"], index[SET_PARAM])) if SET_PARAM in index else {}
    runs["named"] = [not _blank(params.get(r["run_id"])) or not _blank(params.get(r["editor_run"]))
                     for _, r in runs.iterrows()]
    return runs


def _without_named(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`runs` less the editors trained on a named instruction set, and a note naming them."""
    named = runs["named"].astype(bool)
    if not named.any():
        return runs, []
    return runs[~named], [f"{int(named.sum())} run(s) of editors trained on a named instruction set left out: "
                          + ", ".join(runs.loc[named, "run_name"]) + "."]


def from_comparing_studies(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Runs outside studies, and the trials of studies whose trials differ in `column`."""
    trials = runs[runs["study"] != ""]
    varying = {s for s, g in trials.groupby("study") if g[column].nunique() > 1}
    return runs[(runs["study"] == "") | runs["study"].isin(varying)]


def _arm_cases(ct: cases.CaseTables, runs: pd.DataFrame, arm: pd.Series, tasks) -> pd.DataFrame:
    """One evaluation per (arm, seed, task) of `tasks` (cases.choose with the arm as the row), the
    rows' `method` set to their arm."""
    rows = ct.every[ct.every["source"].isin(runs["run_id"]) & ct.every["task"].isin(tasks)]
    if rows.empty:
        return rows
    runs = runs.assign(row=arm)
    kept, _ = cases.choose(rows, runs[runs["run_id"].isin(rows["source"])], own_task=False)
    kept["method"] = kept["source"].map(dict(zip(runs["run_id"], runs["row"])))
    return kept


def _evaluations(df: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The line naming the runs whose cases a section shows."""
    return "Evaluations: " + ", ".join(runs.loc[runs["run_id"].isin(df["source"]), "run_name"]) + "."


def _shared_seeds(df: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, list[str]]:
    """Per task, the rows of the seeds both `a` and `b` were evaluated with (an editor compared
    with itself), and a note of the seeds left out."""
    keep, dropped = [], []
    for task, g in df.groupby("task", sort=False):
        both = set(g.loc[g["method"] == a, "seed"]) & set(g.loc[g["method"] == b, "seed"])
        keep.append(g[g["seed"].isin(both)])
        extra = sorted(set(g["seed"]) - both, key=lambda s: s.zfill(12))
        if extra:
            dropped.append(f"{task}: seed(s) {', '.join(s or '?' for s in extra)}")
    return pd.concat(keep, ignore_index=True), dropped


def seen_unseen(ct: cases.CaseTables, index: pd.DataFrame, source: str) -> str | None:
    """Markdown of the seen vs unseen table; None when no InstructEdit run was evaluated unseen."""
    if ct.empty:
        return None
    runs = editor_runs(ct, index)
    runs, notes = _without_named(runs[runs["instruction_setting"].isin([SEEN, UNSEEN])])
    kept = from_comparing_studies(runs, "instruction_setting")
    # an unseen re-evaluation of a study trial's editor pairs with that trial's own (seen) test
    runs = runs[runs["run_id"].isin(kept["run_id"]) | runs["run_id"].isin(kept["editor_run"])]
    metrics = list(TABLE_METRICS)
    sections = []
    for (row, train), g in runs.groupby(["row", "train_tasks"], sort=False):
        if not (g["instruction_setting"] == UNSEEN).any():
            continue  # only seen: that is Table 3
        tasks = train.split(",")  # on a hold-out task every instruction is unseen: nothing to compare
        df = _arm_cases(ct, g, g["instruction_setting"], tasks)
        head = f"## {row} trained on {', '.join(tasks)}"
        if df.empty or not {SEEN, UNSEEN} <= set(df["method"]):
            sections.append(f"{head}\n\nNo seen and unseen evaluation of these editors with per-case results "
                            f"on their training tasks (runs: {', '.join(g['run_name'])}).")
            continue
        df, dropped = _shared_seeds(df, UNSEEN, SEEN)
        if df.empty:
            sections.append(f"{head}\n\nNo seed was evaluated with both seen and unseen instructions "
                            f"({'; '.join(dropped)}).")
            continue
        shown = order_tasks(df["task"].unique())
        part = [head, compare.long_table(df, metrics, shown, [SEEN, UNSEEN]),
                f"### {UNSEEN} - {SEEN}, paired", compare.difference_table(df, UNSEEN, SEEN, metrics, shown,
                                                                          same_editors=True),
                _evaluations(df, g)]
        if dropped:
            part.append("Seeds without both settings left out: " + "; ".join(dropped) + ".")
        sections.append("\n\n".join(part))
    if not sections:
        return None
    return _document(SEEN_UNSEEN, source, sections, notes)


def _arm_order(train_sets: list[str]) -> dict[str, str]:
    """Task sets (comma-joined) -> display names, fewest tasks first; each set names the tasks the
    smaller sets had first, then its new ones: recent, recent + counterfact, ..."""
    ordered = sorted(train_sets, key=lambda s: (len(s.split(",")), s))
    introduced: list[str] = []
    for s in ordered:
        introduced += [t for t in s.split(",") if t not in introduced]
    return {s: " + ".join(sorted(s.split(","), key=introduced.index)) for s in ordered}


def _on_training_tasks(ct: cases.CaseTables, runs: pd.DataFrame, names: dict[str, str], arms: list[str],
                       metrics: list[str]) -> list[str]:
    """The arms on their own training tasks (in-distribution), each against the one before on the
    tasks both trained on, so the table says what an added task cost or gained where the editor
    trained, not only on the hold-out task."""
    trained = {r: s.split(",") for r, s in zip(runs["run_id"], runs["train_tasks"])}
    tasks = order_tasks({t for ts in trained.values() for t in ts})
    df = _arm_cases(ct, runs, runs["train_tasks"].map(names), tasks)
    if not df.empty:
        df = df[[t in trained[r] for r, t in zip(df["source"], df["task"])]]
    if df.empty:  # no arm was tested on a task it trained on
        return []
    shown = [a for a in arms if a in set(df["method"])]
    part = ["### Each set on its training tasks", compare.long_table(df, metrics, tasks, shown)]
    for prev, cur in pairwise(shown):  # on the training tasks both sets share
        part += [f"### {cur} - {prev} on their shared training tasks, paired",
                 compare.difference_table(df, cur, prev, metrics, tasks)]
    return part


def task_scaling(ct: cases.CaseTables, index: pd.DataFrame, source: str) -> str | None:
    """Markdown of the task-scaling table; None without two task sets evaluated on a hold-out task."""
    if ct.empty:
        return None
    hold_out = task_names(hold_out=True)
    runs = editor_runs(ct, index)
    # unseen evaluations are the other table's; the editors are compared as trained (seen)
    runs, notes = _without_named(runs[(runs["instruction_setting"] != UNSEEN)
                                      & runs["run_id"].isin(ct.every.loc[ct.every["task"].isin(hold_out), "source"])])
    runs = from_comparing_studies(runs, "train_tasks")
    metrics = list(TABLE_METRICS)
    sections = []
    for row, g in runs.groupby("row", sort=False):
        names = _arm_order(list(g["train_tasks"].unique()))
        if len(names) < 2:
            continue
        df = _arm_cases(ct, g, g["train_tasks"].map(names), hold_out)
        arms = [a for a in names.values() if a in set(df["method"])]
        if len(arms) < 2:
            continue
        shown = order_tasks(df["task"].unique())
        table = compare.interval_table(df, metrics, shown, arms).replace("| Method |", "| Training tasks |", 1)
        part = [f"## {row}, tested on {', '.join(shown)} (hold-out)", table]
        for prev, cur in pairwise(arms):
            part += [f"### {cur} - {prev}, paired", compare.difference_table(df, cur, prev, metrics, shown)]
        part += _on_training_tasks(ct, g, names, arms, metrics)
        part.append(_evaluations(df, g))
        sections.append("\n\n".join(part))
    if not sections:
        return None
    return _document(TASK_SCALING, source, sections, notes)


def table1(ct: cases.CaseTables, index: pd.DataFrame, source: str) -> str | None:
    """Markdown of Table 1; None without a single-task editor with per-case results."""
    if ct.empty:
        return None
    runs = ct.runs[ct.runs["method_tag"].isin(SINGLE_TASK)
                   & (ct.runs["tasks"].map(lambda s: len(split_tasks(s))) == 1)]
    if runs.empty:
        return None
    names = {t: f"trained on {t}" for t in order_tasks(runs["tasks"].unique())}
    tasks = order_tasks(ct.every.loc[ct.every["source"].isin(runs["run_id"]), "task"].unique())
    df = _arm_cases(ct, runs, runs["tasks"].map(names), tasks)
    editors = [a for a in names.values() if a in set(df["method"])]
    reference = ct.cases[ct.cases["method"].isin(REFERENCE) & ct.cases["task"].isin(tasks)]
    shown = list(dict.fromkeys(reference["method"])) + editors
    table = compare.long_table(pd.concat([reference, df], ignore_index=True), list(TABLE_METRICS), tasks, shown)
    return _document(TABLE1, source, ["\n\n".join([table, _evaluations(df, runs)])], [])


def _document(name: str, source: str, sections: list[str], notes: list[str]) -> str:
    parts = [f"# {TITLES[name]}", CAPTIONS[name],
             (f"{source}. Each cell is the mean over seeds of the mean over cases, with a 95% bootstrap "
              "interval over cases and seeds (x100 except dd); differences are paired over the cases both "
              "sides share."), *sections]
    if notes:
        parts.append("\n".join(f"Note: {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


TABLES = {TABLE1: table1, SEEN_UNSEEN: seen_unseen, TASK_SCALING: task_scaling}

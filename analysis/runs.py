"""Tracked runs -> one tidy table: one row per (run, metric key), every tag the analyses group by.

Metric keys follow docs/conventions.md:
  `<split>/<task>/<metric>`   e.g. `test/counterfact/reliability`, `val/zsre/portability/reasoning`
  `<split>/<metric>`          averages, e.g. `val/edit_success`, `val/reliability` (task = "avg")
  `<split>/avg/<metric>`      averages, e.g. `test/avg/reliability`            (task = "avg")
  anything else               training metrics (`loss/total`, `train/edit_success`): split = task = ""
The metric part may itself contain a slash (`portability/reasoning`). Interval keys
`<key>_ci_low`, `<key>_ci_high`, `<key>_n` (instructedit evaluate) are not rows of their own: they
fill the `ci_low`, `ci_high`, `n` columns of `<key>`'s row (NaN when a run did not log them).
"""

from __future__ import annotations

import pandas as pd
from instructedit import tracking
from instructedit.evaluate.metrics import METRICS, base_name
from instructedit.evaluate.metrics import higher_is_better as registered

# The roots of evaluation metric names (the metric registry's names up to their first slash:
# `portability` for `portability/reasoning`; `edit_success` is registered too). A key whose second
# part is one of these is an average over tasks (`val/reliability`, `val/portability/reasoning`),
# not a task named "reliability".
METRIC_ROOTS = frozenset(name.split("/")[0] for name in METRICS)
# First parts of keys that are never `<split>/<task>/<metric>`.
NON_SPLIT_PREFIXES = frozenset({"loss", "lr", "train", "system", "time", "perf", "throughput"})
# Roots of the registry's lower-is-better metrics (dd): the direction of a breakdown the registry does
# not list (`dd/<kind>`).
LOWER_IS_BETTER = frozenset(name.split("/")[0] for name, m in METRICS.items() if not m.higher_is_better)

RUN_COLUMNS = [
    "run_id", "run_name", "experiment_id", "status", "start_time", "parent_run_id",
    "kind", "mode", "method", "tasks", "n_train_tasks", "study", "instruction_setting",
    "balance", "dataset_hash", "git_commit",
]
# Tags of the provenance block (train/run.py, tracking.run, evaluate); `source_name` is MLflow's
# own `mlflow.source.name` (the entry point), the fallback when a run has no `command` tag.
PROVENANCE_TAGS = ("seed", "model", "model_source", "best_step", "stopped", "train_edits", "checkpoint_edits",
                   "command", "editor_run", "ray_run", "checkpoint_path", "best_run_id")
METRIC_COLUMNS = ["split", "task", "metric", "value", "ci_low", "ci_high", "n"]
TIDY_COLUMNS = RUN_COLUMNS + METRIC_COLUMNS
CI_SUFFIXES = {"_ci_low": "ci_low", "_ci_high": "ci_high", "_n": "n"}
# `label`: an evaluation's row name in the per-case tables (analysis.cases; evaluate --label)
INDEX_COLUMNS = [*PROVENANCE_TAGS, "label", "source_name"]  # run_table / run_index only, not the tidy rows


def parse_metric_key(key: str) -> tuple[str, str, str]:
    """`test/counterfact/portability/reasoning` -> ("test", "counterfact", "portability/reasoning")."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[0] not in NON_SPLIT_PREFIXES:
        if parts[1] in METRIC_ROOTS:
            return parts[0], "avg", "/".join(parts[1:])
        if len(parts) >= 3:
            return parts[0], parts[1], "/".join(parts[2:])
    return "", "", key


def higher_is_better(metric: str) -> bool:
    """Direction from the metric registry (`dd` and its kin lower-is-better)."""
    if base_name(metric) in METRICS:
        return registered(metric)
    return metric.split("/")[0] not in LOWER_IS_BETTER


def split_tasks(tasks: str | None) -> list[str]:
    if not isinstance(tasks, str):
        return []
    return [t.strip() for t in tasks.split(",") if t.strip()]


def _tag(df: pd.DataFrame, name: str) -> pd.Series:
    col = f"tags.{name}"
    if col in df.columns:
        return df[col].fillna("").astype(str)
    return pd.Series([""] * len(df), index=df.index, dtype=object)


def _balance(df: pd.DataFrame) -> pd.Series:
    """`balanced` / `full` from a `balance` tag, else from any `*balance*` param (set = balanced)."""
    out = _tag(df, "balance")
    params = [c for c in df.columns if c.startswith("params.") and "balance" in c]
    for c in params:
        v = df[c].fillna("").astype(str).str.strip().str.lower()
        derived = v.map(lambda s: "" if s == "" else ("full" if s in {"none", "null", "false", "0", "full"}
                                                      else "balanced"))
        out = out.where(out != "", derived)
    return out


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the RUN_COLUMNS plus every `params.*` column (trial parameters included)."""
    param_cols = sorted(c for c in runs.columns if c.startswith("params."))
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + INDEX_COLUMNS + param_cols)
    empty = pd.Series([""] * len(runs), index=runs.index, dtype=object)
    base = pd.DataFrame(index=runs.index)
    base["run_id"] = runs["run_id"].astype(str)
    base["run_name"] = _tag(runs, "mlflow.runName")
    base["experiment_id"] = runs.get("experiment_id", empty)
    base["status"] = runs.get("status", empty)
    base["start_time"] = runs.get("start_time", pd.NaT)
    base["parent_run_id"] = _tag(runs, "mlflow.parentRunId")
    for name in ("kind", "mode", "method", "tasks", "study", "instruction_setting", "dataset_hash",
                 "git_commit"):
        base[name] = _tag(runs, name)
    base["tasks"] = base["tasks"].map(lambda s: ",".join(split_tasks(s)))
    base["n_train_tasks"] = base["tasks"].map(lambda s: len(split_tasks(s)))
    base["balance"] = _balance(runs)
    for name in (*PROVENANCE_TAGS, "label"):
        base[name] = _tag(runs, name)
    base["source_name"] = _tag(runs, "mlflow.source.name")
    for c in param_cols:
        base[c] = runs[c]
    return base[RUN_COLUMNS + INDEX_COLUMNS + param_cols].reset_index(drop=True)


def tidy(runs: pd.DataFrame, include_training: bool = True) -> pd.DataFrame:
    """The DataFrame of `tracking.search_runs` (tags.*, params.*, metrics.* columns) -> tidy rows.

    Every `params.*` column is kept as a column of its own (`params.train.batch_size`, ...), so trial
    parameters of a study are there to group by.
    """
    base = run_table(runs).drop(columns=INDEX_COLUMNS)
    param_cols = [c for c in base.columns if c.startswith("params.")]
    if runs.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS + param_cols)
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    long = runs[["run_id"] + metric_cols].melt(id_vars="run_id", var_name="key", value_name="value")
    long = long.dropna(subset=["value"])
    long["key"] = long["key"].str[len("metrics."):]
    long["value"] = long["value"].astype(float)
    long = _attach_intervals(long)
    parsed = long["key"].map(parse_metric_key)
    long["split"] = parsed.map(lambda p: p[0])
    long["task"] = parsed.map(lambda p: p[1])
    long["metric"] = parsed.map(lambda p: p[2])
    if not include_training:
        long = long[long["split"] != ""]
    out = base.merge(long[["run_id"] + METRIC_COLUMNS], on="run_id", how="inner")
    out = out[TIDY_COLUMNS + param_cols]
    return out.sort_values(["start_time", "run_id", "split", "task", "metric"], kind="stable").reset_index(
        drop=True
    )


def interval_key(key: str) -> tuple[str, str] | None:
    """`test/zsre/reliability_ci_low` -> (`test/zsre/reliability`, "ci_low"); None for other keys."""
    if key.split("/")[0] in NON_SPLIT_PREFIXES or "/" not in key:
        return None
    for suffix, column in CI_SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], column
    return None


def _attach_intervals(long: pd.DataFrame) -> pd.DataFrame:
    """Rows (run_id, key, value) -> the metric rows only, with ci_low / ci_high / n columns from the
    interval keys of the same run (an interval key without its metric is dropped)."""
    which = long["key"].map(interval_key)
    is_ci = which.notna()
    out = long[~is_ci].copy()
    for col in CI_SUFFIXES.values():
        out[col] = float("nan")
    if is_ci.any():
        ci = long[is_ci].copy()
        ci["base"] = which[is_ci].map(lambda t: t[0])
        ci["col"] = which[is_ci].map(lambda t: t[1])
        wide = ci.pivot_table(index=["run_id", "base"], columns="col", values="value", aggfunc="last")
        keyed = out.set_index(["run_id", "key"])
        for col in wide.columns:
            keyed[col] = wide[col].reindex(keyed.index).to_numpy()
        out = keyed.reset_index()
    return out


def metric_histories(run_ids, keys=None, prefixes=("loss/", "val/"), tracking_uri: str | None = None
                     ) -> pd.DataFrame:
    """Step-wise values of the runs' training and validation metrics: run_id, key, step, value.

    `keys`: exact metric keys; else every logged key starting with one of `prefixes` (one query
    per key, so keep the runs to training runs)."""
    rows = []
    for rid in dict.fromkeys(run_ids):
        names = keys
        if names is None:
            names = [k for k in tracking.get_run(rid, tracking_uri).data.metrics if k.startswith(tuple(prefixes))
                     and interval_key(k) is None]
        for key in names:
            for step, value in tracking.metric_history(rid, key, tracking_uri):
                rows.append({"run_id": rid, "key": key, "step": int(step), "value": float(value)})
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def search(experiment: str | list[str] | None, tracking_uri: str | None = None,
           filter_string: str = "") -> pd.DataFrame:
    """`tracking.search_runs`, but an unknown experiment gives an empty frame instead of an error."""
    try:
        runs = tracking.search_runs(experiment, filter_string=filter_string, tracking_uri=tracking_uri)
    except Exception as e:  # mlflow raises for unknown experiment names in some versions
        if "does not exist" in str(e) or "not found" in str(e).lower():
            return pd.DataFrame(columns=["run_id"])
        raise
    return runs if runs is not None else pd.DataFrame(columns=["run_id"])


def load_runs(experiment: str | list[str] | None, tracking_uri: str | None = None,
              include_training: bool = True, exclude_kinds: tuple[str, ...] = ("report",)) -> pd.DataFrame:
    """All runs of an experiment (all experiments if None) as one tidy table."""
    runs = search(experiment, tracking_uri)
    if not runs.empty and exclude_kinds:
        runs = runs[~_tag(runs, "kind").isin(exclude_kinds)]
    return tidy(runs, include_training=include_training)


def run_index(experiment: str | list[str] | None, tracking_uri: str | None = None,
              exclude_kinds: tuple[str, ...] = ("report",)) -> pd.DataFrame:
    """One row per run (no metrics): what the report lists with links."""
    runs = search(experiment, tracking_uri)
    if not runs.empty and exclude_kinds:
        runs = runs[~_tag(runs, "kind").isin(exclude_kinds)]
    return run_table(runs).sort_values("start_time", kind="stable").reset_index(drop=True)

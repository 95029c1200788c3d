"""`instructedit study NAME --skip-finished`: the grid points earlier invocations already finished.

`--resume` needs Tune's experiment folder, which does not outlive a machine; the MLflow store does.
Every trial's run there records its study (tag `study`), its searched values (params `search.<key>`,
logged when its test starts, and the flattened trial config, e.g. `train.seed`, `data.tasks`; a
bundle's label is also a tag), its status and its test metrics. A grid point counts as done once for
every trial run of the same study that ended FINISHED with test metrics; what is left, in Tune's
grid order and repeated `--trials` times less the runs found, is what the new invocation runs.

Only grids can be skipped through: an Optuna or random draw is no set of points to subtract from.
Nothing here imports Ray: `remaining_points` is pure, `skip_finished` adds the MLflow read.
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from .spec import Param, StudySpec, decode

DONE_STATUS = "FINISHED"


@dataclass(frozen=True)
class RecordedTrial:
    """One trial run as the MLflow store holds it (strings, as MLflow keeps params and tags)."""

    run_id: str
    status: str  # FINISHED | FAILED | KILLED | RUNNING
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: frozenset[str] = frozenset()  # keys of the metrics it logged


@dataclass
class Remaining:
    points: list[dict[str, Any]]  # Tune configs (param key -> label) to run, repeats included
    done: list[tuple[dict[str, Any], list[str]]]  # a point with finished runs -> their run ids
    notes: list[str]  # runs that name a grid point but do not count, and why
    total: int  # grid points x trials
    experiment: str = ""
    tracking_uri: str = ""


def skip_error(spec: StudySpec, resume: bool = False) -> str:
    """Why `--skip-finished` cannot apply to this invocation ("" = it can)."""
    if resume:
        return ("--skip-finished starts a new study from what MLflow holds; --resume continues a Tune "
                "folder: give one of them")
    if spec.searcher == "optuna":
        return (f"--skip-finished needs a grid: study {spec.name!r} uses searcher optuna, whose trials are "
                f"drawn, not grid points")
    loose = [f"{p.key} ({p.kind})" for p in spec.space if p.kind != "grid"]
    if loose:
        return (f"--skip-finished needs a grid: study {spec.name!r} samples {', '.join(loose)}; only "
                f"{{grid: [...]}} parameters make points that can be left out")
    return ""


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every grid point as Tune's config (key -> label), in Tune's order: the first parameter varies
    fastest (table3: both methods at seed 0, then seed 1, ...)."""
    keys = [p.key for p in reversed(spec.space)]
    combos = itertools.product(*(p.labels() for p in reversed(spec.space)))
    return [{p.key: dict(zip(keys, combo))[p.key] for p in spec.space} for combo in combos]


def remaining_points(spec: StudySpec, runs: list[RecordedTrial], trials: int | None = None) -> Remaining:
    """The points of `spec`'s grid still to run, `trials` (default the study's) times each, given the
    trial runs of earlier invocations. A run counts for a point when it is a trial of this study,
    ended FINISHED, logged test metrics for the study's test tasks, and its recorded searched values
    are the point's (a bundle also by content, where its keys were recorded)."""
    trials = trials or spec.trials
    grid = grid_points(spec)
    index = {_key(spec, pt): i for i, pt in enumerate(grid)}
    found: list[list[str]] = [[] for _ in grid]
    notes: list[str] = []
    for run in runs:
        if run.tags.get("kind") != "trial" or run.tags.get("study") != spec.name or run.status != DONE_STATUS:
            continue  # failed, stopped (KILLED) or interrupted (RUNNING): the point still has to run
        point, why = _match(spec, run)
        if point is None:
            continue  # a point outside this grid (say a seed no longer searched)
        shown = describe(spec, point)
        if why:
            notes.append(f"run {run.run_id} ({shown}) not counted: {why}")
            continue
        missing = _missing_tests(spec, point, run.metrics)
        if missing:
            # FINISHED after training, then lost before its test wrote anything: not a result yet.
            notes.append(f"run {run.run_id} ({shown}) not counted: FINISHED without test metrics for {missing}")
            continue
        found[index[_key(spec, point)]].append(run.run_id)
    # Repeat passes like Tune's num_samples: pass r runs the points finished fewer than r + 1 times.
    points = [dict(pt) for r in range(trials) for i, pt in enumerate(grid) if len(found[i]) <= r]
    done = [(dict(grid[i]), ids) for i, ids in enumerate(found) if ids]
    return Remaining(points, done, notes, len(grid) * trials)


def skip_finished(spec: StudySpec, extra: dict[str, Any] | None = None, tracking_uri: str | None = None,
                  trials: int | None = None) -> Remaining:
    """`remaining_points` over the trial runs in the study's MLflow store and experiment, resolved
    as run_study resolves them (--tracking-uri, else the base config's, else the default store; the
    study's experiment, else the base config's)."""
    from .. import tracking

    base = spec.base_config(extra)
    experiment = spec.experiment or base.experiment
    uri = tracking.resolve_tracking_uri(tracking_uri or base.tracking_uri or None)
    left = remaining_points(spec, recorded_trials(spec.name, experiment, uri), trials)
    left.experiment, left.tracking_uri = experiment, uri
    return left


def recorded_trials(study: str, experiment: str, tracking_uri: str) -> list[RecordedTrial]:
    """The trial runs of `study` in `experiment`, oldest first (none if the experiment is new)."""
    from .. import tracking

    if experiment not in tracking.list_experiments(tracking_uri):
        return []
    df = tracking.search_runs(experiment, f"tags.kind = 'trial' and tags.study = '{study}'",
                              tracking_uri=tracking_uri)
    if df.empty:
        return []
    if "start_time" in df:
        df = df.sort_values("start_time", kind="stable")
    out = []
    for row in df.to_dict("records"):
        section = {"tags": {}, "params": {}, "metrics": {}}
        for col, value in row.items():
            head, _, key = col.partition(".")
            if head in section and key and not _missing(value):
                section[head][key] = value
        out.append(RecordedTrial(str(row["run_id"]), str(row.get("status", "")),
                                 {k: str(v) for k, v in section["tags"].items()},
                                 {k: str(v) for k, v in section["params"].items()},
                                 frozenset(section["metrics"])))
    return out


# ---------------------------------------------------------------------------------------- matching
def _key(spec: StudySpec, point: dict[str, Any]) -> tuple:
    return tuple(point[p.key] for p in spec.space)


def describe(spec: StudySpec, point: dict[str, Any]) -> str:
    """A point as the progress lines show it: `arm=instructedit train.seed=0`."""
    return " ".join(f"{k}={v}" for k, v in spec.labels(point).items())


def _match(spec: StudySpec, run: RecordedTrial) -> tuple[dict[str, Any] | None, str]:
    """(the grid point the run trained, why it does not count or ""); (None, "") when it is no point
    of this grid."""
    point = {}
    for p in spec.space:
        label = _recorded_label(spec, p, run)
        if label is None:
            return None, ""
        point[p.key] = label
    for p in spec.space:
        if p.is_bundle:
            why = _bundle_differs(p, point[p.key], run)
            if why:
                return point, why
    return point, ""


def _recorded_label(spec: StudySpec, p: Param, run: RecordedTrial) -> Any:
    """The label (among p's grid values, as Tune sees them) this run was trained with, or None."""
    labels = p.labels()
    if p.is_bundle:
        # search.<key> first (logged when the trial's test starts), else the bundle's tag
        got = run.params.get(f"search.{p.key}", run.tags.get(p.key))
        return got if got in labels else None
    if p.key in run.params:
        # The trial's config as trained (searched values win over every override), compared by
        # value: the param is Python's str() of the config value ("['recent', 'counterfact']"),
        # the label a JSON string or a scalar.
        got = _canon(run.params[p.key])
        hits = [v for v in labels if _canon(decode(v)) == got]
    else:
        got = run.params.get(f"search.{p.key}")
        hits = [v for v in labels if spec.labels({p.key: v})[p.key] == got]
    return hits[0] if hits else None


def _bundle_differs(p: Param, label: str, run: RecordedTrial) -> str:
    """A run whose bundle label is the point's but whose recorded config disagrees with the arm's
    overrides trained something else under that name: say which key differs."""
    for key, value in p.bundles[label].items():
        if key.startswith("test.") or key not in run.params:
            continue  # test-plan keys are no config params; nested mappings are flattened apart
        if _canon(run.params[key]) != _canon(value):
            return f"its {key} is {run.params[key]!r}, the arm {p.key}={label} sets {value!r}"
    return ""


def _missing_tests(spec: StudySpec, point: dict[str, Any], metrics: frozenset[str]) -> list[str]:
    """The study's test tasks (of this point's plan) the run has no test/<task>/ metric for
    (["any task"] when it logged no test metric at all)."""
    if not any(m.startswith("test/") for m in metrics):
        return ["any task"]
    return [t for t in spec.trial_plan(point).tasks if not any(m.startswith(f"test/{t}/") for m in metrics)]


def _canon(value: Any) -> Any:
    """One comparable form for a config value, whether it comes from YAML, a JSON label or an MLflow
    param string: numbers as floats, sequences as tuples, mappings as sorted pairs, "" as None
    (tracking.log_params writes None as "")."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        value = decode(text)
        if isinstance(value, str):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return text
            if isinstance(value, str):
                return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

"""Study definitions: one YAML per study (configs/studies/<name>.yaml) -> a typed, frozen StudySpec.

A study = a base run config + a search space over dotted run-config keys + how to search it
(searcher, scheduler, trials, concurrency, resources, budget) + what each trial is tested on and
which metric picks the best trial. YAML shape (every key optional except `space`):

    description: ...
    base: null                  # a configs/runs name or a path; null = the RunConfig defaults
    overrides: {model: smollm2-135m, data.on_error: skip}   # dotted overrides on the base
    space:
      data.tasks:               # a dotted run-config key: values are config values
        grid: [[recent], [recent, counterfact]]
      editor.edit_lr: {loguniform: [1.0e-5, 1.0e-3]}
      setting:                  # a bundle: grid/choice is a mapping label -> dotted overrides
        grid:
          none: {mode: multi-task, data.instruction_setting: none}
          seen: {data.instruction_setting: seen}
    metric: val/score               # the search objective and best-trial pick: a val metric of the
                                    # training tasks only (never test, train or a hold-out task)
    mode: max                       # max | min
    results: [test/zsre/reliability]   # test metrics shown beside it (CLI table, summary order); never selected on
    searcher: grid                  # grid | random | optuna
    scheduler: {type: none}         # none | asha (asha: metric val/score, grace_period, reduction_factor)
    trials: 1                       # grid: repeats of the whole grid; random/optuna: trials drawn
    max_concurrent: 1
    resources: {cpu: 1, gpu: 0}     # the trial's own process; its Ray Train workers follow train.*
    budget: {max_steps: 200, time_budget_s: null}   # per trial: train.max_steps / train.time_budget_s
    test: {tasks: [zsre], training_tasks: true, split: test, max_records: 100, batch_size: 16}
    experiment: studies             # MLflow experiment ("" = the base config's)

Selection never sees test: `metric` (what Optuna optimises and what picks the best trial, whose
checkpoint is exported) and `scheduler.metric` (what ASHA stops on) must be validation metrics of
the trials' training tasks; loading a study that selects on a test or train split or on a hold-out
task fails with the file and key. Every trial is still tested (`test`), and those numbers are the
study's results (summary.csv, MLflow), not its objective.

Order of precedence for a trial's config: base < overrides < budget < --set < the trial's space point.
A bundle arm that names a missing instruction set (`data.instruction_set`) is dropped with a note,
so `instructions` runs its "optimised" arm only once `instructedit optimize-instructions` wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    _read_yaml,
    _set_dotted,
    apply_overrides,
    from_dict,
    load_run_config,
    selection_error,
    to_dict,
)
from ..provenance import RUN_TAG_KEYS, TRIAL_TAG_KEYS

STUDY_DIR = CONFIG_DIR / "studies"
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")


# ------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "none"  # none | asha
    metric: str = "val/score"  # an intermediate (validation) metric: ASHA stops on it
    mode: str = "max"
    grace_period: int = 1  # validations before a trial can be stopped
    reduction_factor: int = 2
    max_t: int = 0  # validations; 0 = max_steps // val_every + 1


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # the trial driver process (loads records, runs Ray Train, evaluates)
    gpu: float = 0.0
    eval_cpu: float = 1.0  # the evaluation task (it takes a GPU when the trial trains on GPUs)


@dataclass(frozen=True)
class Budget:
    max_steps: int | None = None  # -> train.max_steps
    time_budget_s: float | None = None  # -> train.time_budget_s


@dataclass(frozen=True)
class EvalPlan:
    tasks: tuple[str, ...] = ("zsre",)
    training_tasks: bool = True  # also test on each of the trial's training tasks
    split: str = "test"
    max_records: int | None = None  # per task
    batch_size: int = 16
    instruction_setting: str = ""  # "" = the trial's training setting


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    key: str  # a dotted run-config key, or a bundle name
    kind: str  # grid | choice | uniform | loguniform | randint
    values: tuple[Any, ...] = ()  # grid/choice: config values (bundles: labels)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> dotted overrides
    low: float | None = None
    high: float | None = None

    @property
    def is_bundle(self) -> bool:
        return bool(self.bundles)

    @property
    def categorical(self) -> bool:
        return self.kind in ("grid", "choice")

    def labels(self) -> list[Any]:
        """What Tune sees for a categorical: scalars as they are, lists/mappings as JSON strings
        (Optuna and trial names need scalars)."""
        return [encode(v) for v in self.values]

    def overrides(self, tune_value: Any) -> dict[str, Any]:
        """Dotted overrides of one value; in a bundle, `test.<field>` keys change the trial's test plan."""
        if self.is_bundle:
            return dict(self.bundles[tune_value])
        return {self.key: decode(tune_value) if self.categorical else tune_value}

    def describe(self) -> str:
        if self.categorical:
            return f"{self.kind}{list(self.values)}"
        return f"{self.kind}[{self.low}, {self.high}]"


def encode(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class StudySpec:
    name: str
    space: tuple[Param, ...]
    description: str = ""
    base: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    metric: str = "val/score"  # the objective: a validation metric of the training tasks
    mode: str = "max"
    results: tuple[str, ...] = ()  # result metrics shown beside the objective (never selected on)
    searcher: str = "grid"
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    trials: int = 1
    max_concurrent: int = 1
    resources: Resources = field(default_factory=Resources)
    budget: Budget = field(default_factory=Budget)
    test: EvalPlan = field(default_factory=EvalPlan)
    experiment: str = ""
    notes: tuple[str, ...] = ()  # what loading changed (dropped arms), printed by the runner

    def base_config(self, extra: dict[str, Any] | None = None) -> RunConfig:
        """The config every trial starts from: base < overrides < budget < extra (--set)."""
        cfg = load_run_config(self.base or None, dict(self.overrides))
        budget = {}
        if self.budget.max_steps is not None:
            budget["train.max_steps"] = self.budget.max_steps
        if self.budget.time_budget_s is not None:
            budget["train.time_budget_s"] = self.budget.time_budget_s
        elif self.budget.max_steps is not None:
            # A budget in steps is a budget in training edits: the base config's wall-clock guard
            # would stop the slower arms (more tasks, longer rows) sooner, and the arms compared
            # would then have seen different numbers of edits.
            budget["train.time_budget_s"] = None
        return apply_overrides(cfg, {**budget, **(extra or {})})

    def param(self, key: str) -> Param:
        for p in self.space:
            if p.key == key:
                return p
        raise KeyError(key)

    def _point_overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.space:
            if p.key in point:
                out.update(p.overrides(point[p.key]))
        return out

    def trial_overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """A Tune config (param key -> sampled value or label) -> dotted run-config overrides."""
        return {k: v for k, v in self._point_overrides(point).items() if not k.startswith("test.")}

    def trial_plan(self, point: dict[str, Any]) -> EvalPlan:
        """The test plan of one trial: the study's, with a bundle arm's `test.<field>` overrides."""
        ov = {k[len("test."):]: v for k, v in self._point_overrides(point).items() if k.startswith("test.")}
        return from_dict(EvalPlan, {**to_dict(self.test), **ov}, "test") if ov else self.test

    def trial_config(self, point: dict[str, Any], extra: dict[str, Any] | None = None) -> RunConfig:
        return apply_overrides(self.base_config(extra), self.trial_overrides(point))

    def labels(self, point: dict[str, Any]) -> dict[str, str]:
        """Readable value of each searched parameter (bundle labels as they are)."""
        out = {}
        for p in self.space:
            if p.key in point:
                v = point[p.key]
                out[p.key] = ",".join(map(str, decode(v))) if isinstance(decode(v), list) else str(v)
        return out

    def n_grid(self) -> int:
        n = 1
        for p in self.space:
            if p.kind == "grid":
                n *= len(p.values)
        return n

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d["space"] = {p.key: ({p.kind: dict(p.bundles)} if p.is_bundle else
                              {p.kind: list(p.values)} if p.categorical else {p.kind: [p.low, p.high]})
                      for p in self.space}
        d.pop("notes", None)
        return d



def tasks_under_test(plan: EvalPlan, cfg: RunConfig) -> list[str]:
    """What a trial is tested on: the plan's tasks (+ the trial's training tasks)."""
    names = list(plan.tasks) + (list(cfg.data.tasks) if plan.training_tasks else [])
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------------------------- loading
def study_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    q = STUDY_DIR / f"{name_or_path}.yaml"
    if not q.exists():
        raise ConfigError(f"unknown study {str(name_or_path)!r}; known: {list_studies()} (or give a YAML path)")
    return q


def list_studies() -> list[str]:
    return sorted(q.stem for q in STUDY_DIR.glob("*.yaml"))


def _param(key: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: space.{key} must be one of {{{' | '.join(KINDS)}: ...}}, got {spec!r}")
    kind, vals = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if isinstance(vals, dict):  # a bundle: label -> dotted overrides
            if not vals or not all(isinstance(v, dict) for v in vals.values()):
                raise ConfigError(f"{where}: space.{key}.{kind}: a bundle maps labels to mappings of dotted keys")
            if key in RUN_TAG_KEYS + TRIAL_TAG_KEYS:  # its label would overwrite that tag of the trial's run
                raise ConfigError(f"{where}: space.{key}: a bundle named {key!r} would overwrite the runs' "
                                  f"{key!r} tag; name it otherwise (e.g. 'arm')")
            return Param(key, kind, tuple(str(k) for k in vals), {str(k): dict(v) for k, v in vals.items()})
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{where}: space.{key}.{kind} must be a non-empty list (or a bundle mapping)")
        return Param(key, kind, tuple(vals))
    if not isinstance(vals, list) or len(vals) != 2 or not all(isinstance(v, (int, float)) for v in vals):
        raise ConfigError(f"{where}: space.{key}.{kind} must be [low, high]")
    low, high = vals
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"{where}: space.{key}.{kind}: need 0 < low < high (log) or low < high, got {vals}")
    return Param(key, kind, (), {}, low, high)


def _instruction_set_missing(overrides: dict[str, Any]) -> str:
    from ..data.instruction_sets import set_path

    name = overrides.get("data.instruction_set")
    if name and not set_path(str(name)).exists():
        return str(name)
    return ""


def load_study(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None,
               check: bool = True) -> StudySpec:
    """A study YAML (name under configs/studies or a path) + `study.`-prefixed overrides
    (`{"study.budget.max_steps": 20}`) -> a checked StudySpec."""
    path = study_path(name_or_path)
    raw = _read_yaml(path)
    for k, v in (overrides or {}).items():
        if not k.startswith("study."):
            raise ConfigError(f"study override {k!r} must start with 'study.'")
        if k.startswith(("study.space.", "study.overrides.")):  # their keys are dotted
            section, key = k[len("study."):].split(".", 1)
            if not isinstance(raw.get(section), dict):
                raw[section] = {}
            raw[section][key] = v
        else:
            _set_dotted(raw, k[len("study."):], v)
    where = str(path)
    raw.setdefault("name", path.stem)
    space_raw = raw.pop("space", None)
    if not isinstance(space_raw, dict) or not space_raw:
        raise ConfigError(f"{where}: 'space' must be a mapping of at least one parameter")
    if not isinstance(raw.get("overrides", {}), dict):
        raise ConfigError(f"{where}: 'overrides' must be a mapping of dotted run-config keys")
    for k in ("base", "experiment", "description"):
        if raw.get(k) is None:
            raw.pop(k, None)
    params, notes = [], []
    for key, spec in space_raw.items():
        p = _param(str(key), spec, where)
        if p.is_bundle:
            keep = {}
            for label, ov in p.bundles.items():
                missing = _instruction_set_missing(ov)
                if missing:
                    notes.append(f"space.{key}: arm {label!r} dropped: instruction set {missing!r} not found "
                                 f"(write it with `instructedit optimize-instructions --set-name {missing}`)")
                else:
                    keep[label] = ov
            if not keep:
                raise ConfigError(f"{where}: space.{key}: every arm was dropped")
            p = Param(p.key, p.kind, tuple(keep), keep)
        params.append(p)
    raw["space"] = ()
    spec = from_dict(StudySpec, raw, where)
    spec = dataclasses.replace(spec, space=tuple(params), notes=tuple(notes))
    _check(spec, where, deep=check)
    return spec


def _check(spec: StudySpec, where: str, deep: bool = True) -> None:
    if spec.mode not in ("max", "min"):
        raise ConfigError(f"{where}: mode must be max or min, got {spec.mode!r}")
    if spec.searcher not in SEARCHERS:
        raise ConfigError(f"{where}: searcher must be one of {SEARCHERS}, got {spec.searcher!r}")
    if spec.scheduler.type not in SCHEDULERS:
        raise ConfigError(f"{where}: scheduler.type must be one of {SCHEDULERS}, got {spec.scheduler.type!r}")
    if spec.resources.cpu <= 0 and spec.resources.gpu <= 0:
        raise ConfigError(f"{where}: resources: a trial needs some cpu or gpu (fractions are fine, e.g. cpu: 0.5)")
    if spec.trials < 1 or spec.max_concurrent < 1:
        raise ConfigError(f"{where}: trials and max_concurrent must be >= 1")
    if spec.searcher == "grid" and any(not p.categorical for p in spec.space):
        raise ConfigError(f"{where}: searcher grid needs grid/choice parameters only; use random or optuna "
                          f"for {[p.key for p in spec.space if not p.categorical]}")
    _check_selection(spec, where, (), ())
    if spec.test.split != "test":
        raise ConfigError(f"{where}: study.test.split: trials are tested on the test split, got "
                          f"{spec.test.split!r} (validation is what selects)")
    if not deep:
        return
    base = spec.base_config()
    _check_selection(spec, where, base.data.tasks, base.data.hold_out)
    for p in spec.space:  # every categorical arm must make a valid config on its own
        if p.categorical:
            for v in p.labels():
                try:
                    ov = p.overrides(v)
                    arm = apply_overrides(base, {k: x for k, x in ov.items() if not k.startswith("test.")})
                    spec.trial_plan({p.key: v})
                except ConfigError as e:
                    raise ConfigError(f"{where}: space.{p.key} = {v!r}: {e}") from None
                _check_selection(spec, where, arm.data.tasks, arm.data.hold_out, f" (trial space.{p.key} = {v!r})")
        else:
            apply_overrides(base, {p.key: p.low})


def _check_selection(spec: StudySpec, where: str, tasks, hold_out, arm: str = "") -> None:
    """The study objective and the scheduler's metric read validation splits of training tasks only."""
    keys = [("study.metric", spec.metric)]
    if spec.scheduler.type != "none":
        keys.append(("study.scheduler.metric", spec.scheduler.metric))
    for key, metric in keys:
        why = selection_error(metric, tasks, hold_out)
        if why:
            raise ConfigError(f"{where}: {key}: {why}{arm}")
    for m in spec.results:
        if str(m).split("/")[0] not in ("val", "test"):
            raise ConfigError(f"{where}: study.results: {m!r} must be a val/... or test/... metric key")


def dump(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)

"""Run a study on Ray Tune and track it in MLflow (what `instructedit study NAME` does).

- Storage: `<storage>/<study>/` is the Tune experiment directory (trial dirs, experiment state),
  plus `study.json` (the MLflow parent run, tracking store, experiment), `study.pkl` (the spec and
  --set overrides a resumed study reuses) and `trainer-runs/` (each trial's Ray Train run).
- Selection: the best trial is the one with the best `spec.metric`, a validation metric of its
  training tasks (spec.py rejects test, train and hold-out metrics); test metrics are results.
- MLflow: one parent run (kind=study, study=NAME) holds the study's params (`study.*` and the base
  config), tags best_trial / best_run_id / best_checkpoint, metrics `study/trials_*` and
  `best/<metric>`, and the artifacts summary.csv (trial x metrics), study.yaml, best/config.yaml.
  Each trial is a nested child run (trial.py). Trials that Tune stopped early (ASHA) or that died
  without ending their run are closed KILLED / FAILED here.
- Resume: `Tuner.restore(resume_unfinished=True)`: finished and failed trials are kept as they are,
  unfinished ones continue (their Ray Train runs from the latest checkpoint), the searcher's state
  continues, and the same parent run is reopened.
- Skip finished (`points`, from finished.remaining_points): a new study of just the grid points
  earlier invocations have not finished in MLflow (Tune's folder does not outlive a machine).
- `stop_after=N`: stop the study once N more trials have finished (the rest stay pending for
  --resume); tests use it to interrupt a study at a known point.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from .. import tracking
from ..config import ConfigError, RunConfig, apply_overrides, flatten, from_dict, selection_error, to_dict
from ..provenance import command_line
from .spec import Param, StudySpec, dump
from .trial import FINAL, TRAIN_DIR, StudyHooks, TrialContext, run_trial

STATE_JSON = "study.json"
STATE_PKL = "study.pkl"
STOP_FILE = "stop_after"
SUMMARY = "summary.csv"
POINT = "point"  # the Tune config key of an explicit point list (param_space with points)
INFO_KEYS = ("mlflow_run_id", "editor_path", "stopped", "best_step", "train/steps")


@dataclass
class TrialRow:
    trial_id: str
    trial_name: str
    status: str  # done | failed | stopped (early, by the scheduler) | pending
    params: dict[str, str]  # searched parameter -> readable value
    metrics: dict[str, float]
    run_id: str = ""
    checkpoint: str = ""  # the best editor.pt (in the trial's Tune checkpoint)
    path: str = ""  # the trial directory
    error: str = ""
    config: dict = field(default_factory=dict)  # the Tune config (searched values)

    def as_row(self, metric_keys: list[str]) -> dict[str, Any]:
        row = {"trial_id": self.trial_id, "trial_name": self.trial_name, "status": self.status}
        row.update({f"param:{k}": v for k, v in self.params.items()})
        row.update({k: self.metrics.get(k) for k in metric_keys})
        row.update({"mlflow_run_id": self.run_id, "checkpoint": self.checkpoint, "error": self.error})
        return row


def trials_left(rows: list[TrialRow], expected: int) -> int:
    """Trials still to run: the pending ones and those Tune has not created yet (its grid generator
    makes trials one at a time under max_concurrent, so a study stopped early lists only what it
    started)."""
    return max(sum(r.status == "pending" for r in rows), expected - sum(r.status != "pending" for r in rows))


@dataclass
class StudyOutcome:
    name: str
    study_dir: Path
    parent_run_id: str
    tracking_uri: str
    experiment: str
    metric: str
    mode: str
    trials: list[TrialRow]
    best: TrialRow | None
    best_config: RunConfig | None
    summary_path: Path
    finished: bool  # trials_left == 0; a field because the parent run's summary needs it first
    elapsed_s: float
    expected: int = 0  # trials the study runs in all (expected_trials)

    @property
    def left(self) -> int:
        return trials_left(self.trials, self.expected)

    @property
    def best_checkpoint(self) -> Path | None:
        return Path(self.best.checkpoint) if self.best and self.best.checkpoint else None

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)


# --------------------------------------------------------------------------------- tune wiring
def _domain(p: Param, searcher: str):
    from ray import tune

    if p.categorical:
        labels = p.labels()
        if p.kind == "grid" and searcher != "optuna":
            return tune.grid_search(labels)
        return tune.choice(labels)
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    return tune.randint(int(p.low), int(p.high))


def param_space(spec: StudySpec, points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The study's space; with `points` (--skip-finished), exactly those Tune configs instead: what is
    left of a grid is rarely a product of values, so Tune grids over the points' indices (`point`)
    and every searched key reads its value from the indexed point."""
    if points is None:
        return {p.key: _domain(p, spec.searcher) for p in spec.space}
    from ray import tune

    space: dict[str, Any] = {POINT: tune.grid_search(list(range(len(points))))}
    for p in spec.space:
        space[p.key] = tune.sample_from(lambda config, key=p.key: points[config[POINT]][key])
    return space


def _search_alg(spec: StudySpec):
    if spec.searcher != "optuna":
        return None  # grid / random: Tune's variant generator over param_space
    from .optuna_search import FinalMetricOptuna

    return FinalMetricOptuna(metric=spec.metric, mode=spec.mode, seed=0)


def _scheduler(spec: StudySpec, base: RunConfig):
    s = spec.scheduler
    if s.type != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = s.max_t or (base.train.max_steps // max(1, base.train.val_every) + 1)
    return ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor)


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


class Progress(Callback):
    """One line per trial event on stderr (Tune's own tables are off)."""

    def __init__(self, spec: StudySpec, verbose: bool = True):
        self.spec = spec
        self.verbose = verbose
        self.t0: dict[str, float] = {}

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[study {self.spec.name}] {msg}", file=sys.stderr, flush=True)

    def _point(self, trial) -> str:
        return " ".join(f"{k}={v}" for k, v in self.spec.labels(trial.config).items())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.t0[trial.trial_id] = time.time()
        self._say(f"trial {trial.trial_id} started: {self._point(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if FINAL in result:
            return
        vals = " ".join(f"{k}={result[k]:.3f}" for k in ("val/score", "val/edit_success") if k in result)
        self._say(f"trial {trial.trial_id} step {result.get('step', '?')}: {vals}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        el = time.time() - self.t0.get(trial.trial_id, time.time())
        if FINAL in r:
            shown = [self.spec.metric, *self.spec.results]
            vals = " ".join(f"{k}={'n/a' if r.get(k) is None else f'{r[k]:.4f}'}" for k in shown)
            self._say(f"trial {trial.trial_id} done in {el:.0f}s: {vals}")
        else:
            self._say(f"trial {trial.trial_id} stopped early by the scheduler after {el:.0f}s")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} FAILED (see {trial.error_file or trial.path})")


class StopAfter(Callback):
    """Interrupt the study, exactly like Ctrl+C, once N more trials have finished: Tune saves its
    state and `--resume` continues. N is read from <study>/stop_after (absent = never), so a restored
    study, which gets this pickled callback back, runs on unless asked again."""

    def __init__(self, path: str):
        self.path = path
        self.finished = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        if FINAL not in (trial.last_result or {}):
            return
        self.finished += 1
        p = Path(self.path)
        if not p.exists() or self.finished < int(p.read_text().strip() or 0):
            return
        p.unlink(missing_ok=True)
        handler = signal.getsignal(signal.SIGUSR1)
        if threading.current_thread() is threading.main_thread() and callable(handler):
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's interrupt handler (tune.run installs it)


# -------------------------------------------------------------------------------------- driver
def study_dir(spec_name: str, storage: str | os.PathLike | None = None) -> Path:
    return Path(storage or "runs/studies").expanduser().resolve() / spec_name


def _env() -> dict[str, str]:
    """Absolute locations the trial processes need (Tune runs them in their trial directories)."""
    from ..data.corpora import resolve_data_dir
    from ..data.instruction_sets import sets_dir

    env = {"INSTRUCTEDIT_INSTRUCTION_SETS": str(Path(sets_dir()).resolve())}
    try:
        env["INSTRUCTEDIT_DATA"] = str(resolve_data_dir().resolve())
    except FileNotFoundError:  # no corpora here: the trials will say so
        env.pop("INSTRUCTEDIT_DATA", None)
    for k in ("INSTRUCTEDIT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


def parent_params(spec: StudySpec, base: RunConfig) -> dict[str, Any]:
    params = {f"study.{k}": v for k, v in flatten({k: v for k, v in spec.to_dict().items()
                                                    if k not in ("space", "overrides")}).items()}
    params.update({f"study.space.{p.key}": p.describe() for p in spec.space})
    params.update(flatten(to_dict(base)))
    return params


def run_study(
    spec: StudySpec,
    *,
    extra_overrides: dict[str, Any] | None = None,
    storage: str | os.PathLike | None = None,
    tracking_uri: str | None = None,
    resume: bool = False,
    trials: int | None = None,
    max_concurrent: int | None = None,
    stop_after: int | None = None,
    address: str | None = None,
    hooks: StudyHooks | None = None,
    verbose: bool = True,
    points: list[dict[str, Any]] | None = None,
) -> StudyOutcome:
    """Run (or with `resume`, continue) the study; returns its trials, best trial and MLflow ids.
    `points` (Tune configs, repeats included; finished.remaining_points) replaces the grid x
    `trials`: what --skip-finished left to run."""
    from ray import tune

    from ..train.trainer import init_ray

    t0 = time.time()
    say = (lambda *a: print(f"[study {spec.name}]", *a, file=sys.stderr, flush=True)) if verbose else (
        lambda *a: None)
    sdir = study_dir(spec.name, storage)
    state_json, state_pkl = sdir / STATE_JSON, sdir / STATE_PKL
    prior_run_id, frozen = None, None
    if resume:
        if not state_pkl.exists() or not tune.Tuner.can_restore(str(sdir)):
            raise FileNotFoundError(f"nothing to resume: no study {spec.name!r} under {sdir.parent}")
        saved = pickle.loads(state_pkl.read_bytes())
        info = json.loads(state_json.read_text())
        spec, extra_overrides, frozen = saved["spec"], saved["extra"], saved.get("base")
        points = saved.get("points")  # the restored Tuner keeps its own space; this counts its trials
        why = selection_error(spec.metric)
        if why:  # a study started before selection moved to validation metrics
            raise ConfigError(f"{state_pkl}: study.metric: {why}; start a new study (another --storage)")
        prior_run_id, uri = info["parent_run_id"], info["tracking_uri"]
        if trials or max_concurrent:
            say("note: --trials/--max-concurrent apply to new studies only; a resumed study keeps its own")
    else:
        if state_json.exists():
            raise FileExistsError(f"study {spec.name!r} already exists at {sdir}: continue it with --resume, "
                                  f"or use another --storage (or delete that folder)")
        if trials:
            spec = _replace(spec, trials=trials)
        if max_concurrent:
            spec = _replace(spec, max_concurrent=max_concurrent)
        if points is not None and not points:
            raise ConfigError(f"study {spec.name!r}: no trials left to run")
    extra = dict(extra_overrides or {})
    # The base config is resolved once and frozen (study.pkl): a run YAML edited while the study runs,
    # or before a resume, must not change the trials that follow.
    if frozen:
        base = from_dict(RunConfig, frozen, "study base config").validate()
    else:
        base = spec.base_config(extra)
        for key in ("data_dir", "prepared_dir"):  # trials run in their own directories
            value = getattr(base.data, key)
            if value and not Path(value).is_absolute():
                extra[f"data.{key}"] = str(Path(value).resolve())
        base = spec.base_config(extra)
    experiment = spec.experiment or base.experiment
    if not resume:
        uri = tracking.resolve_tracking_uri(tracking_uri or base.tracking_uri or None)
    searched = {k for p in spec.space for v in (p.labels() if p.categorical else [p.low]) for k in p.overrides(v)}
    for k in sorted(set(extra) & searched):
        say(f"note: --set {k} is searched by the study; the trial values win")
    for note in spec.notes:
        say(f"note: {note}")
    if base.data.prepared_dir and any("data.balance" in (p.overrides(v) if p.categorical else {})
                                      for p in spec.space for v in (p.labels() if p.categorical else [])):
        raise ConfigError("data.balance needs records built in-process: drop data.prepared_dir "
                          "(prepared parquet is already balanced)")

    sdir.mkdir(parents=True, exist_ok=True)
    stop_file = sdir / STOP_FILE
    if stop_after:
        stop_file.write_text(str(stop_after))
    else:
        stop_file.unlink(missing_ok=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(address, log_to_driver=verbose)

    tags = {"kind": "study", "study": spec.name, "mode": base.mode, "method": _method(base),
            "tasks": ",".join(base.data.tasks), "instruction_setting": base.data.instruction_setting,
            "searcher": spec.searcher, "scheduler": spec.scheduler.type}
    with tracking.run(experiment, spec.name, params=None if prior_run_id else parent_params(spec, base), tags=tags,
                      tracking_uri=uri, run_id=prior_run_id) as parent_id:
        if not prior_run_id:
            state_pkl.write_bytes(pickle.dumps({"spec": spec, "extra": extra, "base": to_dict(base),
                                                "points": points}))
            state_json.write_text(json.dumps({"study": spec.name, "parent_run_id": parent_id, "tracking_uri": uri,
                                              "experiment": experiment, "created": time.time()}, indent=1) + "\n")
            tracking.log_text(dump(spec), "study.yaml")
        expected = expected_trials(spec, points)  # spec and points are final here (a resume restored them)
        say(f"{'resuming' if resume else 'starting'}: {expected} trials ({spec.searcher} search, scheduler "
            f"{spec.scheduler.type}, {spec.max_concurrent} at a time) -> {sdir}; MLflow parent run {parent_id} "
            f"(experiment {experiment!r}, {uri})")

        ctx = TrialContext(spec=spec, base=to_dict(base), parent_run_id=parent_id, tracking_uri=uri, experiment=experiment,
                           study_dir=str(sdir), env=_env(), hooks=hooks, verbose=verbose, command=command_line())
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
        if resume:
            tuner = tune.Tuner.restore(str(sdir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(spec, points),
                tune_config=tune.TuneConfig(
                    num_samples=1 if points is not None else spec.trials,  # points carry their repeats
                    search_alg=_search_alg(spec), scheduler=_scheduler(spec, base),
                    max_concurrent_trials=spec.max_concurrent, trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=spec.name, storage_path=str(sdir.parent), verbose=0,
                    callbacks=[Progress(spec, verbose), StopAfter(str(stop_file))],
                    failure_config=tune.FailureConfig(max_failures=0),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                ),
            )
        grid = tuner.fit()
        rows = collect(grid, spec)
        _close_child_runs(rows, spec.name, experiment, uri)
        finished = trials_left(rows, expected) == 0
        best = best_trial(rows, spec.metric, spec.mode)
        best_cfg = apply_overrides(base, spec.trial_overrides(best.config)) if best else None
        summary = _log_parent(rows, best, best_cfg, spec, sdir, finished)
    stop_file.unlink(missing_ok=True)
    out = StudyOutcome(spec.name, sdir, parent_id, uri, experiment, spec.metric, spec.mode, rows, best,
                       best_cfg, summary, finished, time.time() - t0, expected)
    say(f"{'finished' if finished else 'stopped (resume with --resume)'} in {out.elapsed_s:.0f}s: "
        f"{out.count('done')} done, {out.count('failed')} failed, {out.count('stopped')} stopped early, "
        f"{out.left} left")
    return out


def expected_trials(spec: StudySpec, points: list[dict[str, Any]] | None = None) -> int:
    """grid/random: Tune expands every grid dimension once per sample; optuna: `trials` trials; an
    explicit point list (--skip-finished): one trial per point."""
    if points is not None:
        return len(points)
    return spec.trials if spec.searcher == "optuna" else spec.n_grid() * spec.trials


def _replace(spec: StudySpec, **changes) -> StudySpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _method(cfg: RunConfig) -> str:
    from ..editor import methods

    return methods.get(cfg.mode).display


# ------------------------------------------------------------------------------------- results
def _tune_trials(grid) -> dict[str, Any]:
    """trial id -> Tune's Trial (its status: TERMINATED, ERROR, PENDING, RUNNING, PAUSED; its config).
    ResultGrid has no public accessor; without it the status is inferred from the metrics alone."""
    analysis = getattr(grid, "_experiment_analysis", None)
    return {t.trial_id: t for t in getattr(analysis, "trials", None) or []}


def collect(grid, spec: StudySpec) -> list[TrialRow]:
    """ResultGrid -> one TrialRow per trial (status, searched values, final metrics, ids)."""
    trials = _tune_trials(grid)
    rows = []
    for res in grid:
        m = dict(res.metrics or {})
        trial_id = str(m.get("trial_id") or Path(res.path).name.removeprefix("trial_"))
        trial = trials.get(trial_id)
        tune_status = getattr(trial, "status", "")
        # A trial that failed before a restore comes back with an empty result config: its Trial has it.
        cfg = dict(res.config or getattr(trial, "config", None) or {})
        if res.error is not None or tune_status == "ERROR":
            status = "failed"
        elif FINAL in m:
            status = "done"
        elif tune_status == "TERMINATED" or (not tune_status and any(k.startswith("val/") for k in m)):
            status = "stopped"  # ended by the scheduler before its test
        else:
            status = "pending"  # not started, or interrupted: --resume runs it
        ckpt = ""
        if res.checkpoint is not None and status == "done":
            hits = sorted(Path(res.checkpoint.path).glob("*.pt"))
            ckpt = str(hits[0]) if hits else ""
        metrics = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and "/" in k and not k.startswith(("config/", "time", "system/"))}
        rows.append(TrialRow(trial_id=trial_id, trial_name=f"trial_{trial_id}", status=status,
                             params=spec.labels(cfg), metrics=metrics, run_id=str(m.get("mlflow_run_id", "")),
                             checkpoint=ckpt, path=str(res.path), error=_short_error(res.error), config=cfg))
    return sorted(rows, key=lambda r: r.trial_id)


def _short_error(err) -> str:
    if err is None:
        return ""
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:300]


def best_trial(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.status == "done" and _finite(r.metrics.get(metric))]
    if not scored:
        return None
    sign = 1 if mode == "max" else -1
    return max(scored, key=lambda r: sign * r.metrics[metric])


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _close_child_runs(rows: list[TrialRow], study: str, experiment: str, uri: str) -> None:
    """Trials Tune stopped (ASHA) or that died never ended their child runs: end them here."""
    by_trial: dict[str, list] = {}
    runs = tracking.search_runs(experiment, f"tags.kind = 'trial' and tags.study = '{study}'", tracking_uri=uri)
    if runs.empty:
        return
    for _, r in runs.iterrows():
        by_trial.setdefault(str(r.get("tags.trial_id", "")), []).append((r["run_id"], r["status"]))
    for row in rows:
        for run_id, status in by_trial.get(row.trial_id, []):
            if not row.run_id:
                row.run_id = run_id
            if status == "RUNNING" and row.status in ("stopped", "failed"):
                tracking.set_tags({"trial_status": row.status}, run_id=run_id)
                tracking.set_terminated(run_id, "KILLED" if row.status == "stopped" else "FAILED", uri)


def summary_rows(rows: list[TrialRow], metric: str, mode: str, results: tuple[str, ...] = ()
                 ) -> list[dict[str, Any]]:
    """One row per trial, best (by the val objective) first; columns: the objective, the study's
    result metrics, then every other val/test metric."""
    keys = sorted({k for r in rows for k in r.metrics if k.split("/")[0] in ("val", "test") or k == "train/steps"})
    head = list(dict.fromkeys([metric, *results]))
    keys = head + [k for k in keys if k not in head]
    sign = -1 if mode == "max" else 1
    order = sorted(rows, key=lambda r: (r.status != "done", sign * r.metrics.get(metric, float("nan"))
                                        if _finite(r.metrics.get(metric)) else math.inf, r.trial_id))
    return [r.as_row(keys) for r in order]


def _log_parent(rows: list[TrialRow], best: TrialRow | None, best_cfg: RunConfig | None, spec: StudySpec,
                sdir: Path, finished: bool) -> Path:
    from ..train.run import write_csv

    table = summary_rows(rows, spec.metric, spec.mode, spec.results)
    path = write_csv(table, sdir / SUMMARY) if table else sdir / SUMMARY
    if not table:
        path.write_text("")
    tracking.log_artifact(path)
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "failed", "stopped", "pending")}
    tracking.log_metrics({"study/trials_total": len(rows), **{f"study/trials_{k}": v for k, v in counts.items()}})
    tracking.set_tags({"study_status": "finished" if finished else "interrupted"})
    if best is not None and best_cfg is not None:
        tracking.log_metrics({f"best/{k}": v for k, v in best.metrics.items()
                              if k.split("/")[0] in ("val", "test")})
        tracking.set_tags({"best_trial": best.trial_id, "best_run_id": best.run_id,
                           "best_checkpoint": best.checkpoint,
                           "best_params": json.dumps(best.params, sort_keys=True)})
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "config.yaml"
            p.write_text(yaml.safe_dump(to_dict(best_cfg), sort_keys=False))
            tracking.log_artifact(p, "best")
    return path


# ------------------------------------------------------------------------------------- reading
def load_outcome_info(name: str, storage: str | os.PathLike | None = None) -> dict[str, Any]:
    """study.json of a study folder (parent run id, tracking store, experiment)."""
    p = study_dir(name, storage) / STATE_JSON
    if not p.exists():
        raise FileNotFoundError(f"no study {name!r} at {p.parent}")
    return json.loads(p.read_text())


def best_from_mlflow(parent_run_id: str, tracking_uri: str | None = None, dst: str | None = None
                     ) -> tuple[dict[str, Any], Path]:
    """The best trial's config (best/config.yaml of the parent) and its editor checkpoint (downloaded
    from the best trial's child run)."""
    run = tracking.get_run(parent_run_id, tracking_uri)
    best_run = run.data.tags.get("best_run_id")
    if not best_run:
        raise LookupError(f"study run {parent_run_id} has no best trial (no trial finished)")
    cfg_path = tracking.download_artifacts(parent_run_id, "best/config.yaml", dst, tracking_uri)
    from ..editor.checkpoint import resolve

    ckpt_dir = tracking.download_artifacts(best_run, "checkpoint", dst, tracking_uri)
    return yaml.safe_load(Path(cfg_path).read_text()), resolve(ckpt_dir).path


__all__ = [
    "TRAIN_DIR",
    "StudyHooks",
    "StudyOutcome",
    "TrialRow",
    "best_from_mlflow",
    "best_trial",
    "collect",
    "load_outcome_info",
    "param_space",
    "run_study",
    "summary_rows",
]

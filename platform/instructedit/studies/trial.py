"""One study trial, run by Ray Tune in its own process: train an editor on Ray Train, test it, report.

- Training: `train.run.train_run` (the same tracked training as `instructedit train`) with a
  `TuneReportCallback` on its TorchTrainer, so every validation's metrics (`val/...`) reach Tune and
  an ASHA scheduler can stop a weak trial early. Its MLflow run is the trial's child run (tags
  kind=trial, study, trial_id, + the parent run id); it gets params, val metrics, config.yaml,
  manifest.json, val_table.csv and checkpoint/editor.pt from train_run.
- Testing: the best checkpoint is evaluated on the trial's test tasks (the study's, e.g. zsre, plus
  the trial's training tasks) in a Ray task (a GPU when training used GPUs); `test/<task>/<metric>`
  and eval/<split>/{cases.parquet,summary.csv} go to the same child run.
- The final `tune.report` carries the best val metrics, the test metrics, `study/final` = 1 and the
  best editor as the trial's Tune checkpoint.
- A trial restarted after an interruption (Tuner.restore) continues its Ray Train run from the
  latest checkpoint, and its evaluation from the finished part files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import StudySpec, tasks_under_test

TRAIN_DIR = "trainer-runs"  # <storage>/<study>/trainer-runs/<study>-<trial id>-<time>: Ray Train runs
EVAL_DIR = "evals"  # <storage>/<study>/evals/<trial id>/<split>: resumable per-case results
FINAL = "study/final"


@dataclass
class StudyHooks:
    """Test instrumentation (picklable; off by default): trials whose searched values match
    `fail_if` (Tune config key -> value) raise at training step `fail_step` on every attempt."""

    fail_if: dict[str, Any] = field(default_factory=dict)
    fail_step: int = 0

    def worker_hooks(self, point: dict[str, Any]):
        from ..train.trainer import WorkerHooks

        if self.fail_if and all(point.get(k) == v for k, v in self.fail_if.items()):
            return WorkerHooks(fail_step=self.fail_step)
        return None


@dataclass
class TrialContext:
    """What every trial needs from the driver (passed with tune.with_parameters)."""

    spec: StudySpec
    base: dict[str, Any]  # the resolved base run config, frozen when the study started
    parent_run_id: str
    tracking_uri: str
    experiment: str
    study_dir: str  # absolute: trials run with the trial directory as working directory
    env: dict[str, str] = field(default_factory=dict)  # absolute data/instruction-set dirs
    hooks: StudyHooks | None = None
    verbose: bool = True
    command: str = ""  # the driver's command line (a trial's own argv is Ray's worker's)


def trial_tags(spec: StudySpec, point: dict[str, Any], trial_id: str, trial_name: str) -> dict[str, str]:
    tags = {"kind": "trial", "study": spec.name, "trial_id": trial_id, "trial_name": trial_name}
    for p in spec.space:  # bundle labels read well as tags (balance=full, setting=unseen)
        if p.is_bundle and p.key in point:
            tags[p.key] = str(point[p.key])
    return tags


def run_trial(config: dict, ctx: TrialContext) -> None:
    """The Tune function trainable."""
    os.environ.update(ctx.env)
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from .. import tracking
    from ..config import RunConfig, apply_overrides, from_dict
    from ..data.pipeline import load_records
    from ..evaluate.runner import instruction_use, log_results
    from ..train.run import RUN_INFO, train_run
    from ..train.trainer import resolve_use_gpu, worker_threads

    spec = ctx.spec
    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    point = {p.key: config[p.key] for p in spec.space if p.key in config}
    base = from_dict(RunConfig, ctx.base, "study base config")
    cfg = apply_overrides(base, {**spec.trial_overrides(point), "name": f"{spec.name}-{trial_id}",
                                 "experiment": ctx.experiment})
    plan = spec.trial_plan(point)
    setting, instructed_edit = instruction_use(cfg.data.instruction_setting, plan.instruction_setting)
    say = (lambda *a: print(f"[trial {trial_id}]", *a, file=sys.stderr, flush=True)) if ctx.verbose else (
        lambda *a: None)

    train_root = Path(ctx.study_dir) / TRAIN_DIR
    resume = any(train_root.glob(f"{cfg.name}-*/{RUN_INFO}"))
    tags = {**trial_tags(spec, point, trial_id, trial_name), "instruction_setting": setting}
    if ctx.command:
        tags["command"] = ctx.command
    say(f"{'resuming' if resume else 'training'}: {spec.labels(point)}")
    out = train_run(
        cfg, resume=resume, tracking_uri=ctx.tracking_uri, storage_path=str(train_root),
        worker_hooks=ctx.hooks.worker_hooks(point) if ctx.hooks else None, verbose=ctx.verbose,
        extra_tags=tags, parent_run_id=ctx.parent_run_id, callbacks=[TuneReportCallback()],
    )
    if out.checkpoint is None or not out.checkpoint.exists():
        raise RuntimeError(f"trial {trial_id}: training left no checkpoint (steps={out.steps}, "
                           f"stopped={out.stopped}); raise train.max_steps above train.val_every")

    # Test the best checkpoint; the child run is reopened so a failure here ends it FAILED.
    with tracking.run(ctx.experiment, run_id=out.run_id, tracking_uri=ctx.tracking_uri):
        tracking.log_params({f"search.{k}": v for k, v in spec.labels(point).items()})
        test_cfg = cfg
        if plan.max_records is not None:
            test_cfg = apply_overrides(cfg, {"data.max_records": plan.max_records})
        tasks = tasks_under_test(plan, cfg)
        records = load_records(test_cfg, plan.split, tasks=tasks)
        say(f"testing {out.checkpoint.parent.name} on {tasks} ({len(records)} {plan.split} records, "
            f"instructions {setting})")
        gpu = resolve_use_gpu(cfg.train.use_gpu)
        # Outside the trial's placement group (like Ray Train's workers): the training workers have
        # given their resources back by now.
        evaluate = ray.remote(_evaluate).options(
            num_cpus=spec.resources.eval_cpu, num_gpus=1 if gpu else 0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        result = ray.get(evaluate.remote(
            records, str(Path(ctx.study_dir) / EVAL_DIR / trial_id / plan.split), str(out.checkpoint), setting, plan.split,
            plan.batch_size, cfg.train.max_length, cfg.data.seed, cfg.data.instruction_set, ctx.env,
            ctx.verbose, worker_threads(cfg.train.torch_threads, spec.max_concurrent), instructed_edit))
        log_results(result, plan.split, run_id=out.run_id, tracking_uri=ctx.tracking_uri)
        final = {**out.best_metrics, **result.metrics, FINAL: 1.0, "train/steps": out.steps,
                 "best_step": out.best_step, "stopped": out.stopped, "mlflow_run_id": out.run_id,
                 "editor_path": str(out.checkpoint)}
        metric = final.get(spec.metric)
        say(f"done: {spec.metric} = {metric if metric is None else round(metric, 4)}")

    # The best editor becomes the trial's Tune checkpoint (copied into the trial directory).
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(out.checkpoint, Path(tmp) / out.checkpoint.name)
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def _evaluate(records: list, out_dir: str, checkpoint: str, setting: str, split: str, batch_size: int,
              max_length: int, seed: int, instruction_set: str, env: dict, verbose: bool, threads: int,
              instructed_edit: bool = True):
    """A Ray task: the batched, resumable evaluation runner on this task's device."""
    os.environ.update(env)
    import torch

    # Ray sets OMP_NUM_THREADS=1 in a 1-CPU task: the test of a 600-step trial ran on one of two cores
    # (load 1.1 while it ran); the trial's share of the node's cores instead, as training workers get.
    torch.set_num_threads(threads)

    from ..evaluate.core import EvalOptions
    from ..evaluate.runner import EvalTarget, run_evaluation

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return run_evaluation(records, out_dir, target=EvalTarget("editor", checkpoint=checkpoint, device=device),
                          setting=setting, split=split, batch_size=batch_size, max_length=max_length,
                          seed=seed, instruction_set=instruction_set, progress=verbose,
                          options=EvalOptions(instructed_edit=instructed_edit))

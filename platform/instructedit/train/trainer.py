"""Ray Train (V2) wiring: the editor loop of loop.py on N workers, same code on a laptop and a GPU cluster.

- Scaling: `ScalingConfig(num_workers=N, use_gpu=auto)`; gloo on CPU, NCCL + bf16 autocast on GPU.
  DDP wraps the hypernetwork only (loop.py); the frozen base model is never wrapped.
- Data: the train and val records go into Ray's object store as two Arrow tables (`ray.put`) and
  every worker fetches both whole. They are not Ray Datasets: nothing is streamed or split, and a
  Dataset would add Ray Data's stats actor and streaming executor to the run, more processes whose
  10 ms timers preempt the training threads (docs/performance.md).
  Every worker holds the whole (small, text-only) record list, draws the same seeded global
  permutation, and takes its rank's slice of each global batch (loop.py). So the global batch is
  exactly `train.batch_size` whatever N, the workers see disjoint records at every step, N workers
  reproduce the batches of one worker (2 x B/2 == 1 x B up to float reduction order), and a
  restarted worker regenerates the same order up to its step. (Streaming per-worker shards would
  change the batches with N and make resumption order-dependent.) Each worker validates its slice
  of the val subset; the rows are gathered.
- Checkpoints: at each validation every worker calls `ray.train.report(metrics, checkpoint)`; rank 0
  attaches the editor-only checkpoint `step-XXXXXX/{editor.pt,state.pt}` (checkpoint.py). Ray keeps
  the best k by the early-stopping metric, plus always the latest. A worker that dies is restarted
  (`FailureConfig(max_failures)`) with the whole group; the loop resumes from `get_checkpoint()`'s
  state.pt (editor, Adam, step, early-stopping state), so step numbering continues.
- Tracking: the driver owns the MLflow run; rank 0 logs training losses, system metrics and val
  metrics into it by run id as they happen (a cluster needs an http:// tracking server).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

import torch

from .. import ray_session
from ..config import RunConfig, from_dict, to_dict
from ..data.record import records_to_table, table_to_records
from .checkpoint import EDITOR_FILE, load_resume_state, step_dir_name, step_of, write_best
from .loop import LoopHooks, train_editor

# ------------------------------------------------------------------------------------- driver
# Ray is started in one place for every command (quiet by default); kept importable from here.
init_ray = ray_session.init_ray


def resolve_use_gpu(setting: str) -> bool:
    """train.use_gpu: true | false | auto (= the cluster has a GPU)."""
    s = str(setting).lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1


def canonical_order(records: list) -> list:
    """The record order every worker (and the plain loop, for comparisons) trains on."""
    return sorted(records, key=lambda r: (r.task, r.case_id))


@dataclass
class WorkerHooks:
    """Test and benchmark instrumentation of the worker loop (picklable; off by default).

    fault_step: at this step rank `fault_rank` dies (os._exit, like a lost node) or raises, but only
    while `fault_marker` does not exist (it is created first): the restarted attempt runs clean.
    fail_step: raise at this step on every attempt (a run that must fail).
    batch_log_dir: every rank appends {rank, step, time, case_ids} per step to rank-<r>.jsonl.
    """

    fault_step: int | None = None
    fault_rank: int = 0
    fault_marker: str = ""
    fault_kill: bool = True
    fail_step: int | None = None
    batch_log_dir: str = ""

    def fault(self, rank: int):
        def hook(step: int) -> None:
            if self.fail_step is not None and step == self.fail_step:
                raise RuntimeError(f"injected training failure at step {step}")
            if self.fault_step is None or step != self.fault_step or rank != self.fault_rank:
                return
            marker = Path(self.fault_marker)
            if self.fault_marker and marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"step": step, "rank": rank, "pid": os.getpid()}))
            if self.fault_kill:
                os._exit(1)
            raise RuntimeError(f"injected worker fault at step {step}")

        return hook

    def on_batch(self, rank: int):
        if not self.batch_log_dir:
            return None
        path = Path(self.batch_log_dir) / f"rank-{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)

        def hook(step: int, records: list) -> None:
            with open(path, "a") as f:
                f.write(json.dumps({"rank": rank, "step": step, "time": time.time(),
                                    "case_ids": [r.case_id for r in records]}) + "\n")

        return hook


@dataclass
class RayTrainResult:
    run_dir: Path  # storage_path/<name>: Ray's record of the run and its kept checkpoints
    best_checkpoint: Path | None  # step-XXXXXX directory with editor.pt (+ state.pt)
    best_metrics: dict[str, float]
    best_step: int
    steps: int
    stopped: str
    checkpoints: list[Path] = field(default_factory=list)  # every kept checkpoint, by step
    ray_result: Any = None


def storage_root(cfg: RunConfig, storage_path: str | None = None) -> Path:
    return Path(storage_path or cfg.train.storage_path or "runs").expanduser().resolve()


def train_on_ray(
    cfg: RunConfig,
    train_records: list,
    val_records: list,
    *,
    name: str,
    storage_path: str | None = None,
    mlflow_run_id: str | None = None,
    tracking_uri: str | None = None,
    worker_hooks: WorkerHooks | None = None,
    verbose: bool = True,
    callbacks: list | None = None,
) -> RayTrainResult:
    """Run the editor loop on `cfg.train.num_workers` Ray Train workers (Ray must be initialised).

    Re-running with the same `name` and storage path resumes that run from its latest checkpoint.
    `callbacks`: Ray Train callbacks, e.g. `TuneReportCallback()` when a Tune trial runs this.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    tc = cfg.train
    use_gpu = resolve_use_gpu(tc.use_gpu)
    root = storage_root(cfg, storage_path)
    root.mkdir(parents=True, exist_ok=True)
    # the driver holds these refs through fit(), so the tables live as long as the run
    records = {"train": ray.put(records_to_table(list(train_records))),
               "val": ray.put(records_to_table(list(val_records)))}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "run_config": to_dict(cfg),
            "records": records,
            "mlflow_run_id": mlflow_run_id,
            "tracking_uri": tracking_uri,
            "worker_hooks": worker_hooks,
            "verbose": verbose,
            "run_dir": str(root / name),  # where rank 0 keeps best.json beside Ray's step folders
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=tc.num_workers, use_gpu=use_gpu),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(root),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=tc.keep_checkpoints,
                checkpoint_score_attribute=tc.early_stop_metric,
                checkpoint_score_order="max",
            ),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    kept = sorted(((Path(c.path), m) for c, m in (result.best_checkpoints or [])), key=lambda cm: step_of(cm[0]) or 0)
    best_dir, best_metrics = None, {}
    if kept:
        best_dir, best_metrics = max(kept, key=lambda cm: (_score(cm[1], tc.early_stop_metric), -(step_of(cm[0]) or 0)))
    final = result.return_value or {}  # rank 0's TrainResult summary
    return RayTrainResult(
        run_dir=root / name,
        best_checkpoint=best_dir,
        best_metrics={k: v for k, v in best_metrics.items() if k.startswith("val/")},
        best_step=int(final.get("best_step", step_of(best_dir) or 0) if best_dir else 0),
        steps=int(final.get("steps", 0)),
        stopped=str(final.get("stopped", "")),
        checkpoints=[c for c, _ in kept],
        ray_result=result,
    )


def _score(metrics: dict, key: str) -> float:
    v = metrics.get(key, metrics.get("val/score"))
    return float("-inf") if v is None else float(v)


# ------------------------------------------------------------------------------------- worker
def _fetch_records(ref) -> list:
    import ray

    return canonical_order(table_to_records(ray.get(ref)))


def system_metrics(device: torch.device) -> dict[str, float]:
    """This worker's host: CPU and memory (psutil), GPU memory when on a GPU."""
    import psutil

    proc = psutil.Process()
    out = {
        "system/cpu_percent": psutil.cpu_percent(interval=None),
        "system/memory_percent": psutil.virtual_memory().percent,
        "system/worker_rss_mb": proc.memory_info().rss / 2**20,
    }
    if device.type == "cuda":
        out["system/gpu_memory_allocated_mb"] = torch.cuda.memory_allocated(device) / 2**20
        out["system/gpu_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def worker_threads(configured: int, local_workers: int) -> int:
    """train.torch_threads, or (0) the cores this process may use split among the run's workers
    on the node: Ray's OMP_NUM_THREADS=1 for a 1-CPU worker would leave the other cores idle."""
    if configured:
        return configured
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_workers))


def _train_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch

    cfg = from_dict(RunConfig, config["run_config"]).validate()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    hooks_cfg: WorkerHooks = config.get("worker_hooks") or WorkerHooks()
    device = ray.train.torch.get_device()
    torch.set_num_threads(worker_threads(cfg.train.torch_threads, ctx.get_local_world_size()))
    autocast = torch.bfloat16 if device.type == "cuda" else None
    train_records = _fetch_records(config["records"]["train"])
    val_records = _fetch_records(config["records"]["val"])

    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_resume_state(d)

    run_id = config.get("mlflow_run_id")
    log_to_mlflow = rank == 0 and bool(run_id)
    if log_to_mlflow:
        from .. import tracking

        tracking.configure(config.get("tracking_uri"))

    def on_log(step: int, metrics: dict) -> None:
        if log_to_mlflow:
            tracking.log_metrics({**metrics, **system_metrics(device)}, step=step, run_id=run_id)

    def on_validate(step: int, val: dict, ckpt_dir: Path | None, improved: bool) -> None:
        metrics = {**val, "step": step}
        metrics.setdefault(cfg.train.early_stop_metric, val.get("val/score", 0.0))
        if log_to_mlflow:
            tracking.log_metrics(val, step=step, run_id=run_id)
        checkpoint = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        # A barrier across workers; rank 0's checkpoint is copied to storage before it returns.
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=step_dir_name(step))
        if ckpt_dir:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        # Wait until the controller has registered it: a worker lost right after a validation must
        # still resume from this checkpoint (costs up to one controller poll, ~2 s, per validation).
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        if ckpt_dir and improved and config.get("run_dir"):
            # Only now is step-XXXXXX in storage: the pointer never names a checkpoint still in flight.
            write_best(config["run_dir"], step, cfg.train.early_stop_metric, metrics[cfg.train.early_stop_metric])

    out_dir = Path(tempfile.mkdtemp(prefix="instructedit-worker-"))
    try:
        result = train_editor(
            cfg, train_records, val_records, out_dir, resume=resume, device=device,
            hooks=LoopHooks(on_log=on_log, on_validate=on_validate, fault=hooks_cfg.fault(rank),
                            on_batch=hooks_cfg.on_batch(rank)),
            verbose=config.get("verbose", True), autocast_dtype=autocast,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"steps": result.steps, "stopped": result.stopped, "best_step": result.best_step}


def best_editor_file(result: RayTrainResult) -> Path | None:
    return result.best_checkpoint / EDITOR_FILE if result.best_checkpoint else None

"""Memory of a real training run over its whole length (issue 15: a 300-step SmolLM2 run <= 2.5 GB, flat).

Runs `train_run` (Ray Train, one CPU worker, the tracked path `instructedit train` takes) on a shipped
run config for --steps steps, with early stopping off so the run lasts, and samples the resident
memory of every process of this run once a second (psutil: this driver and its children: raylet,
the Train controller, the training worker). Reports, for the training worker (the process holding
the model, the editor and the batches) and for the whole tree: the peak, the series, and the drift
(mean RSS of the last quarter of the run minus the second quarter's: the first quarter holds the
start-up and first-epoch caching), plus the worker RSS that training logs to MLflow each log step
(`system/worker_rss_mb`). The load average is recorded beside the timings.

    python benchmarks/train_memory.py --config instructedit-smollm2 --steps 300 \\
        --out docs/results/bench_train_memory.json

With --command, it samples the same way around any command instead (a study trial, say: training,
validation and the test evaluation that follows), and the worker's logged RSS is left out:

    python benchmarks/train_memory.py --out docs/results/bench_study_memory.json \\
        --command "instructedit study table3 ..."
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET_PEAK_MB = 2.5 * 1024


class TreeSampler:
    """RSS of this process and all its descendants, once every `every` seconds, by role."""

    def __init__(self, every: float = 1.0):
        import psutil

        self.psutil, self.every = psutil, every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._t0 = time.time()

    @staticmethod
    def role(cmdline: list[str]) -> str:
        text = " ".join(cmdline)
        # Ray titles its worker processes "ray::<Actor>.<method>".
        if "RayTrainWorker" in text:
            return "worker"
        return "other"

    def sample(self) -> dict[str, float]:
        me = self.psutil.Process()
        procs = [me, *me.children(recursive=True)]
        out = {"t": time.time() - self._t0, "tree_mb": 0.0, "worker_mb": 0.0}
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                role = self.role(p.cmdline())
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            out["tree_mb"] += rss
            if role == "worker":
                out["worker_mb"] = max(out["worker_mb"], rss)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.sample())

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def drift(values: list[float]) -> float | None:
    """Mean of the last quarter minus the mean of the second quarter (MB); None when too short."""
    n = len(values)
    if n < 8:
        return None
    q = n // 4
    return statistics.fmean(values[-q:]) - statistics.fmean(values[q:2 * q])


def memory_summary(sampler: TreeSampler) -> dict:
    """Peaks and drifts of the training worker and the whole tree, the target, and the samples."""
    worker = [s["worker_mb"] for s in sampler.samples if s["worker_mb"] > 0]
    tree = [s["tree_mb"] for s in sampler.samples]
    return {
        "worker_peak_mb": max(worker, default=None),
        "worker_drift_mb": drift(worker),
        "tree_peak_mb": max(tree, default=None),
        "tree_drift_mb": drift(tree),
        "target_peak_mb": TARGET_PEAK_MB,
        "meets_target": bool(worker) and max(worker) <= TARGET_PEAK_MB,
        "samples": [{k: round(v, 1) for k, v in s.items()} for s in sampler.samples],
    }


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    summary = {k: v for k, v in result.items() if k not in ("samples", "logged_worker_rss_mb")}
    print(json.dumps(summary, indent=1), file=sys.stderr)


def sample_command(args) -> int:
    """RSS of a command's whole process tree over its run (it is this process's child)."""
    import subprocess

    load0, t0 = os.getloadavg(), time.time()
    with TreeSampler(args.every) as sampler:
        rc = subprocess.call(args.command, shell=True)
    write_json(Path(args.out), {
        "benchmark": "train_memory", "command": args.command, "returncode": rc,
        "wall_s": time.time() - t0, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        **memory_summary(sampler),
    })
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="instructedit-smollm2", help="a shipped run config or a YAML path")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--val-every", type=int, default=75)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    ap.add_argument("--every", type=float, default=1.0, help="sampling interval, seconds")
    ap.add_argument("--workdir", default=None, help="where the Ray run and its MLflow store stay (default: a temp dir)")
    ap.add_argument("--command", default=None,
                    help="sample this shell command's process tree instead of running train_run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.command:
        return sample_command(args)

    import ray
    import yaml
    from instructedit import tracking
    from instructedit.config import load_run_config
    from instructedit.train.run import train_run

    overrides = {"train.max_steps": args.steps, "train.val_every": args.val_every,
                 "train.early_stop_patience": 10**6, "train.time_budget_s": None, "train.num_workers": 1,
                 "train.use_gpu": "false", "name": "bench-train-memory", "experiment": "bench-train-memory"}
    for kv in args.set:
        k, _, v = kv.partition("=")
        overrides[k] = yaml.safe_load(v)
    cfg = load_run_config(args.config, overrides)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-train-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short socket paths
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    load0 = os.getloadavg()
    t0 = time.time()
    with TreeSampler(args.every) as sampler:
        out = train_run(cfg, tracking_uri=uri, storage_path=str(work / "runs"), verbose=True)
    wall = time.time() - t0
    load1 = os.getloadavg()
    ray.shutdown()

    logged = [v for _, v in tracking.metric_history(out.run_id, "system/worker_rss_mb", uri)]
    result = {
        "benchmark": "train_memory",
        "config": args.config,
        "model": cfg.model,
        "steps": out.steps,
        "batch_edits": cfg.train.batch_size,
        "stopped": out.stopped,
        "wall_s": wall,
        "s_per_step": wall / max(out.steps, 1),
        "loadavg_start": load0,
        "loadavg_end": load1,
        "logged_worker_rss_mb": logged,
        "logged_worker_drift_mb": drift(logged),
        **memory_summary(sampler),
    }
    write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

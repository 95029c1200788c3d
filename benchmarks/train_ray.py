"""Ray Train overhead: time to first step and steady-state step time of the editor loop run
(a) plainly in this process, (b) on 1 Ray Train worker, (c) on 2 Ray Train workers (DDP, B/2 each),
same config and records, in one run. Writes JSON with the overhead ratios.

    python benchmarks/train_ray.py --out bench-train-ray.json [--model tiny-llama] [--steps 20]

Time to first step: from the call (trainer.fit() / train_editor()) to the start of step 2, so it
counts worker start-up, dataset reading, model building and the first step; Ray's own start (ray.init)
is reported apart. Steady state: median gap between consecutive step starts on rank 0 after the
warm-up steps. A Ray worker gets 1 CPU and Ray sets OMP_NUM_THREADS=1 in it, so the plain loop runs
with --threads 1 by default for a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if len(os.environ.get("RAY_TMPDIR", "")) == 0:
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short unix-socket paths

import torch
from instructedit.config import load_run_config
from instructedit.data.pipeline import load_records
from instructedit.train.loop import LoopHooks, train_editor
from instructedit.train.trainer import WorkerHooks, canonical_order, init_ray, train_on_ray


def timings(starts: list[float], t0: float, warmup: int) -> dict:
    gaps = [b - a for a, b in itertools.pairwise(starts)][warmup:]
    return {
        "time_to_first_step_s": round(starts[1] - t0, 3),
        "steady_step_s": round(statistics.median(gaps), 4),
        "steady_step_mean_s": round(statistics.mean(gaps), 4),
        "steps_timed": len(gaps),
    }


def plain(cfg, train, val, out: Path, warmup: int) -> dict:
    starts: list[float] = []
    t0 = time.time()
    train_editor(cfg, train, val, out, hooks=LoopHooks(on_batch=lambda s, r: starts.append(time.time())),
                 verbose=False)
    total = time.time() - t0
    return {**timings(starts, t0, warmup), "total_s": round(total, 3)}


def on_ray(cfg, train, val, out: Path, warmup: int) -> dict:
    logs = out / "batches"
    t0 = time.time()
    train_on_ray(cfg, train, val, name="bench", storage_path=str(out / "storage"),
                 worker_hooks=WorkerHooks(batch_log_dir=str(logs)), verbose=False)
    total = time.time() - t0
    starts = [json.loads(line)["time"] for line in (logs / "rank-0.jsonl").read_text().splitlines()]
    return {**timings(starts, t0, warmup), "total_s": round(total, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2, help="step gaps left out of the steady state")
    p.add_argument("--batch-size", type=int, default=8, help="global batch (2 workers: half each)")
    p.add_argument("--rank", type=int, default=64, help="editor.rank")
    p.add_argument("--records", type=int, default=64, help="records per task and split")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the plain loop")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from instructedit.config import parse_overrides

    base = {
        "model": args.model, "data.tasks": ["counterfact", "recent"], "data.hold_out": [],
        "data.max_records": args.records, "editor.rank": args.rank,
        "train.batch_size": args.batch_size, "train.max_steps": args.steps, "train.val_every": args.steps,
        "train.log_every": args.steps, "train.val_size": 4, "train.max_length": 64, "train.max_failures": 0,
        **parse_overrides(args.set),
    }
    cfg1 = load_run_config(None, {**base, "train.num_workers": 1})
    train = canonical_order(load_records(cfg1, "train", tasks=list(cfg1.data.tasks)))
    val = canonical_order(load_records(cfg1, "val", tasks=list(cfg1.data.tasks)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-ray-"))
    results: dict = {}

    torch.set_num_threads(args.threads)
    print(f"plain loop ({args.threads} thread(s)) ...", file=sys.stderr, flush=True)
    results["plain"] = plain(cfg1, train, val, tmp / "plain", args.warmup)
    t = time.time()
    init_ray(log_to_driver=False)
    ray_init_s = round(time.time() - t, 3)
    for n in args.workers:
        print(f"Ray Train, {n} worker(s) ...", file=sys.stderr, flush=True)
        cfg = load_run_config(None, {**base, "train.num_workers": n})
        results[f"ray_{n}"] = on_ray(cfg, train, val, tmp / f"ray{n}", args.warmup)

    p0 = results["plain"]
    overhead = {}
    for n in args.workers:
        r = results[f"ray_{n}"]
        overhead[f"ray_{n}_first_step_ratio"] = round(r["time_to_first_step_s"] / p0["time_to_first_step_s"], 3)
        overhead[f"ray_{n}_first_step_extra_s"] = round(r["time_to_first_step_s"] - p0["time_to_first_step_s"], 3)
        overhead[f"ray_{n}_steady_step_ratio"] = round(r["steady_step_s"] / p0["steady_step_s"], 3)
    import ray

    doc = {
        "benchmark": "train_ray",
        "config": {"model": args.model, "global_batch": args.batch_size, "steps": args.steps,
                   "editor_rank": args.rank, "train_records": len(train), "plain_threads": args.threads},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "ray": ray.__version__, "load_avg_1m": os.getloadavg()[0]},
        "ray_init_s": ray_init_s,
        "results": results,
        "overhead": overhead,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

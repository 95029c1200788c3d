"""Records per second of `prepare`: the Ray Data pipeline vs the same transformation in a plain loop.

Both run over every shared corpus (the default `instructedit prepare` tasks), read -> validate ->
tag -> split -> borrow/balance -> parquet per task and split, in one process run:
  * loop: `build_task` for each task in this process, then the parquet writes (parse cache cleared);
  * ray:  `prepare()` on a local Ray (started before timing; its start-up is reported apart), run
          twice: the first run includes starting Ray workers, the second reuses them.
The ratio is ray (warm) records/s over loop records/s.

    python benchmarks/prepare.py --out results/bench_prepare.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from instructedit.config import load_run_config
from instructedit.data import readers
from instructedit.data.corpora import resolve_data_dir
from instructedit.data.pipeline import ALL_HOLD_OUT, ALL_TASKS, build_task, task_configs
from instructedit.data.prepare import prepare
from instructedit.data.record import records_to_table
from instructedit.ray_session import init_ray


def plain_loop(cfg, data_dir: Path, out: Path) -> dict:
    readers._parsed.cache_clear()
    t = time.perf_counter()
    read = kept = 0
    for task in task_configs(list(ALL_TASKS) + list(ALL_HOLD_OUT)):
        res = build_task(task, data_dir, cfg.data, on_error="skip")
        read += sum(n or 0 for n in res.source_records.values())
        (out / task.name).mkdir(parents=True, exist_ok=True)
        for split, recs in res.splits.items():
            kept += len(recs)
            pq.write_table(records_to_table(recs), out / task.name / f"{split}.parquet")
    elapsed = time.perf_counter() - t
    return {"seconds": round(elapsed, 3), "records": read, "kept": kept, "records_per_s": round(read / elapsed, 1)}


def ray_run(cfg, data_dir: Path, out: Path) -> dict:
    t = time.perf_counter()
    m = prepare(cfg, out, on_error="skip", progress=False, data_dir=data_dir)
    elapsed = time.perf_counter() - t
    read = m["totals"]["read"]
    return {"seconds": round(elapsed, 3), "records": read, "kept": m["totals"]["kept"],
            "records_per_s": round(read / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON result file")
    ap.add_argument("--data-dir", help="corpus directory (default: as instructedit prepare)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = load_run_config(None, {"data.tasks": list(ALL_TASKS), "data.hold_out": list(ALL_HOLD_OUT)})
    data_dir = resolve_data_dir(args.data_dir, cfg)
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        loop = plain_loop(cfg, data_dir, work / "loop")
        t = time.perf_counter()
        init_ray()
        ray_init_s = time.perf_counter() - t
        cold = ray_run(cfg, data_dir, work / "ray-cold")
        warm = ray_run(cfg, data_dir, work / "ray-warm")
        for split_file in (work / "loop").glob("*/*.parquet"):  # both paths wrote the same records
            rel = split_file.relative_to(work / "loop")
            assert pq.read_table(split_file).equals(pq.read_table(work / "ray-warm" / rel)), rel
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import ray

    result = {
        "benchmark": "prepare",
        "records": loop["records"],
        "plain_loop": loop,
        "ray_init_s": round(ray_init_s, 3),
        "ray_cold": cold,
        "ray_warm": warm,
        "ray_over_loop": round(warm["records_per_s"] / loop["records_per_s"], 3),
        "ray_cold_over_loop": round(cold["records_per_s"] / loop["records_per_s"], 3),
        "identical_output": True,
        "cpus": os.cpu_count(),
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "ray": ray.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

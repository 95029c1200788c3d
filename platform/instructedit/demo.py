"""`make demo` = `python -m instructedit.demo`: the main job end to end on embedded defaults.

prepare the corpora (Ray Data) -> train a small InstructEdit editor on SmolLM2-135M (Ray Train,
configs/runs/demo.yaml) -> evaluate it and the unedited model on the training tasks and the
held-out ZsRE -> the HTML report -> a results table and the command that opens the MLflow UI.
Everything is logged to MLflow (default store: sqlite under ./mlruns). The steps are the same
commands a user runs by hand; this module only chains them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METRICS = ("reliability", "generalization", "locality", "portability")


def _banner(msg: str, t0: float) -> None:
    print(f"\n=== {msg}  [{time.time() - t0:5.0f} s]", flush=True)


def results_table(rows: dict[str, dict[str, float]], tasks: list[str], split: str = "test") -> str:
    """{method: {<split>/<task>/<metric>: value}} -> a text table (x100), one row per method and task."""
    head = f"{'method':<16}{'task':<14}" + "".join(f"{m[:14]:>15}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for method, metrics in rows.items():
        for task in tasks + ["avg"]:
            vals = [metrics.get(f"{split}/{task}/{m}") for m in METRICS]
            if all(v is None for v in vals):
                continue
            cells = "".join(f"{'-' if v is None else f'{100 * v:.1f}':>15}" for v in vals)
            lines.append(f"{method:<16}{task:<14}{cells}")
    return "\n".join(lines)


def _read_summary(path: Path) -> dict[str, float]:
    """An evaluation's summary.csv (key, split, task, metric, value) -> {key: value}."""
    import csv

    with open(path) as f:
        return {r["key"]: float(r["value"]) for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m instructedit.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo", help="run YAML (a path or a name under configs/runs)")
    p.add_argument("--workdir", default=".", help="where prepared/, runs/, evals/, reports/ and mlruns/ go")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--eval-records", type=int, default=None, help="test records per task (default: eval.max_records)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite under WORKDIR/mlruns)")
    args = p.parse_args(argv)

    t0 = time.time()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the default MLflow store, runs/, evals/ and reports/ all land here

    from . import tracking
    from .cli import main as cli
    from .config import load_run_config, parse_overrides
    from .data.prepare import prepare
    from .train.run import train_run
    from .train.trainer import init_ray

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    cfg = load_run_config(args.config, parse_overrides(args.set))
    prepared = work / "prepared" / cfg.name
    init_ray()  # one local Ray for every step, with worker output shown here

    _banner(f"1/4 prepare: {', '.join(cfg.data.tasks + cfg.data.hold_out)} -> {prepared}", t0)
    prepare(cfg, prepared, on_error="skip", progress=True)  # bad corpus records -> rejects.jsonl
    cfg = load_run_config(args.config, {**parse_overrides(args.set), "data.prepared_dir": str(prepared)})

    _banner(f"2/4 train: {cfg.mode} editor on {cfg.model}, {cfg.train.num_workers} Ray Train worker(s), "
            f"up to {cfg.train.max_steps} steps", t0)
    out = train_run(cfg, tracking_uri=uri)
    print(f"best checkpoint {out.checkpoint} (step {out.best_step}); MLflow run {out.run_id}", flush=True)

    tasks = list(cfg.eval.tasks or (cfg.data.tasks + cfg.data.hold_out))
    n = args.eval_records or cfg.eval.max_records
    common = ["--tasks", ",".join(tasks), "--split", cfg.eval.split, "--prepared-dir", str(prepared),
              "--batch-size", str(cfg.eval.batch_size), "--max-length", str(cfg.train.max_length),
              "--tracking-uri", uri, "--quiet"] + (["--max-records", str(n)] if n else [])
    _banner(f"3/4 evaluate on {', '.join(tasks)} ({cfg.eval.split}, {n or 'all'} records per task): "
            "the trained editor, then the unedited model", t0)
    evals = work / "evals" / out.name
    rc = cli(["evaluate", "--run", out.run_id, "--out", str(evals / "editor"), *common])
    rc = rc or cli(["evaluate", "--baseline", "pre-edit", "--model", cfg.model, "--experiment", cfg.experiment,
                    "--out", str(evals / "pre-edit"), *common])
    if rc:
        return rc

    _banner("4/4 report", t0)
    cli(["report", "--experiment", cfg.experiment, "--tracking-uri", uri])

    rows = {"Pre-edit": _read_summary(evals / "pre-edit" / "summary.csv"),
            "InstructEdit": _read_summary(evals / "editor" / "summary.csv")}
    print(f"\nResults ({cfg.eval.split} split, x100; {', '.join(cfg.data.hold_out)} held out of training):")
    print(results_table(rows, tasks, cfg.eval.split))
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    ui = " ".join(tracking.ui_command(uri))
    print(f"open the MLflow UI:  instructedit ui --tracking-uri '{uri}'\n   (or: {ui})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

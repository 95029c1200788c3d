"""`make demo` = `python -m instructedit.demo`: the main job end to end on embedded defaults.

prepare the corpora (Ray Data) -> train a small InstructEdit editor on SmolLM2-135M (Ray Train,
configs/runs/demo.yaml) -> evaluate it and the unedited model on the training tasks and the
held-out ZsRE -> the HTML report -> a results table and the command that opens the MLflow UI.
Everything is logged to MLflow (default store: sqlite under ./mlruns). The steps are the same
commands a user runs by hand; this module only chains them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The demo's results table: reliability on plain probes beside the same probes with the instruction,
# then the other plain-probe metrics.
METRICS = ("reliability", "reliability_instructed", "generalization", "locality", "portability")
HEADS = {"reliability_instructed": "rel.(instr.)"}


def _banner(msg: str, t0: float) -> None:
    print(f"\n=== {msg}  [{time.time() - t0:5.0f} s]", flush=True)


def _cell(stat: dict | None, metric: str) -> str:
    """`mean [low, high]`, rounded to what n supports (the platform's one rule, evaluate/metrics.py)."""
    from .evaluate.metrics import format_estimate

    stat = stat or {}
    return format_estimate(stat.get("mean"), stat.get("ci_low"), stat.get("ci_high"), stat.get("n"), metric)


def results_table(rows: dict[str, dict[str, dict[str, dict]]], tasks: list[str]) -> str:
    """{method: {task: {metric: {mean, ci_low, ci_high, n}}}} (summary.json) -> a text table (x100,
    95% intervals, n), one row per method and task."""
    width = 20  # "100.0 [99.0, 100.0]" and a space
    head = f"{'method':<14}{'task':<13}{'n':>6}" + "".join(f"{HEADS.get(m, m)[:width - 1]:>{width}}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for method, summary in rows.items():
        for task in tasks + ["avg"]:
            stats = summary.get(task, {})
            if not any(m in stats for m in METRICS):
                continue
            n = next((stats[m].get("n") for m in METRICS if m in stats and stats[m].get("n")), None)
            cells = "".join(f"{_cell(stats.get(m), m):>{width}}" for m in METRICS)
            lines.append(f"{method:<14}{task:<13}{'' if n is None else int(n):>6}{cells}")
    return "\n".join(lines)


def read_summary(folder: Path) -> dict[str, dict[str, dict]]:
    """An evaluation folder's summary.json, else its summary.csv (means only)."""
    import csv
    import json

    if (folder / "summary.json").exists():
        return json.loads((folder / "summary.json").read_text())
    out: dict[str, dict[str, dict]] = {}
    with open(folder / "summary.csv") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["task"], {})[r["metric"]] = {"mean": float(r["value"])}
    return out


def _quietly(log, fn, *a):
    """Run a step with its output in the log file (the demo prints its own one-line summary); when it
    fails, its last lines are shown here too."""
    if log is None:
        return fn(*a)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = fn(*a)
    except BaseException:
        print(buf.getvalue()[-3000:], file=sys.stderr, end="")
        raise
    finally:
        log.write(buf.getvalue())
    if isinstance(rc, int) and rc:
        print(buf.getvalue()[-3000:], file=sys.stderr, end="")
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m instructedit.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo", help="run YAML (a path or a name under configs/runs)")
    p.add_argument("--workdir", default=".", help="where prepared/, runs/, evals/, reports/ and mlruns/ go")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--eval-records", type=int, default=None, help="test records per task (default: eval.max_records)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite under WORKDIR/mlruns)")
    p.add_argument("--verbose", action="store_true",
                   help="show every step's full output and Ray's and MLflow's own logs (default: a log file)")
    args = p.parse_args(argv)

    t0 = time.time()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the default MLflow store, runs/, evals/ and reports/ all land here

    from . import ray_session

    log_path = ray_session.setup_logging("demo", work / "runs", verbose=args.verbose)
    log = ray_session.log_stream()

    from . import tracking
    from .cli import main as cli
    from .config import load_run_config, parse_overrides
    from .data.prepare import prepare
    from .train.run import train_run

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    cfg = load_run_config(args.config, parse_overrides(args.set))
    prepared = work / "prepared" / cfg.name
    ray_session.init_ray()  # one local Ray for every step

    _banner(f"1/4 prepare: {', '.join(cfg.data.tasks + cfg.data.hold_out)} -> {prepared}", t0)
    # bad corpus records -> rejects.jsonl
    manifest = _quietly(log, prepare, cfg, prepared, "skip", args.verbose)
    t = manifest["totals"]
    print(f"[demo] kept {t['kept']} of {t['read']} records ({t['rejected']} rejected, {t['capped']} over "
          f"data.max_records) -> {prepared.relative_to(work)}", flush=True)
    cfg = load_run_config(args.config, {**parse_overrides(args.set), "data.prepared_dir": str(prepared)})

    _banner(f"2/4 train: {cfg.mode} editor on {cfg.model}, {cfg.train.num_workers} Ray Train worker(s), "
            f"up to {cfg.train.max_steps} steps of {cfg.train.batch_size} edits", t0)
    out = train_run(cfg, tracking_uri=uri)
    score = out.best_metrics.get(cfg.train.early_stop_metric)
    print(f"[demo] best: step {out.best_step}" + (f", {cfg.train.early_stop_metric} {score:.3f}" if score is not None
                                                  else "") + f" ({out.checkpoint}); MLflow run {out.run_id}", flush=True)

    tasks = list(cfg.eval.tasks or (cfg.data.tasks + cfg.data.hold_out))
    n = args.eval_records or cfg.eval.max_records
    common = ["--tasks", ",".join(tasks), "--split", cfg.eval.split, "--prepared-dir", str(prepared),
              "--batch-size", str(cfg.eval.batch_size), "--max-length", str(cfg.train.max_length),
              "--tracking-uri", uri, "--quiet"] + (["--max-records", str(n)] if n else [])
    _banner(f"3/4 evaluate on {', '.join(tasks)} ({cfg.eval.split}, {n or 'all'} records per task): "
            "the trained editor, then the unedited model", t0)
    evals = work / "evals" / out.name
    runs = {"InstructEdit": ["--run", out.run_id, "--out", str(evals / "editor")],
            "Pre-edit": ["--baseline", "pre-edit", "--model", cfg.model, "--experiment", cfg.experiment,
                         "--out", str(evals / "pre-edit")]}
    for method, how in runs.items():
        t1 = time.time()
        rc = _quietly(log, cli, ["evaluate", *how, *common])
        if rc:
            print(f"[demo] evaluate {method} failed (exit {rc})" + (f"; see {log_path}" if log_path else ""))
            return rc
        print(f"[demo] {method}: {how[how.index('--out') + 1]} ({time.time() - t1:.0f} s)", flush=True)

    _banner("4/4 report", t0)
    report_dir = work / "reports" / cfg.experiment
    # This demo's runs only: earlier demos in the same experiment would be averaged into its cells.
    ids = [out.run_id] + [json.loads((evals / m / "run.json").read_text()).get("run_id", "")
                          for m in ("pre-edit",) if (evals / m / "run.json").exists()]
    _quietly(log, cli, ["report", "--experiment", cfg.experiment, "--tracking-uri", uri, "--out", str(report_dir),
                        "--runs", *[i for i in ids if i]])
    figs = sorted(p.stem for p in (report_dir / "figures").glob("*.png"))
    print(f"[demo] report: {report_dir / 'report.html'} (figures: {', '.join(figs) or 'none'})", flush=True)

    rows = {"Pre-edit": read_summary(evals / "pre-edit"), "InstructEdit": read_summary(evals / "editor")}
    print(f"\nResults ({cfg.eval.split} split, x100, mean [95% interval]; {', '.join(cfg.data.hold_out)} held out "
          "of training):")
    print(results_table(rows, tasks))
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    ui = " ".join(tracking.ui_command(uri))
    print(f"open the MLflow UI:  instructedit ui --tracking-uri '{uri}'\n   (or: {ui})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`instructedit prepare`: corpora -> instruction-tagged parquet per task and split (Ray Data)."""

from __future__ import annotations

import argparse
import sys

HELP = "read, validate, tag and split the editing corpora into parquet (Ray Data)"
DESCRIPTION = (
    "Read the editing corpora, validate every record, tag it with an instruction, split it into "
    "train/val/test by a stable hash and write OUT/<task>/<split>.parquet with OUT/manifest.json. "
    "Without --config every task of the registry (configs/tasks, the hold-out tasks included) is "
    "prepared with --on-error skip, so the manifest accounts for every record; with --config the "
    "run's data section applies (data.on_error defaults to raise)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run YAML (a path or a name under configs/runs); default: all corpora")
    p.add_argument("--out", default="prepared", help="output directory (replaced only when the run succeeds)")
    p.add_argument("--data-dir", help="corpus directory (default: data.data_dir, $INSTRUCTEDIT_DATA, ../shared/data)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="prepare exactly these tasks")
    p.add_argument("--instructions", metavar="SETTING", help="none | seen | unseen | id:<instruction id>")
    p.add_argument("--seed", type=int, help="seed of instruction choice, ConvSent labels and balancing")
    p.add_argument("--on-error", choices=("raise", "skip"),
                   help="raise: stop at a bad record; skip: write it to rejects.jsonl and go on")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. data.split_fractions=[0.8,0.1,0.1] (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress output or summary table")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and MLflow's own output here (default: they go to a log file named at the start)")


def run(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, load_run_config, parse_overrides, task_names
    from ..data.corpora import CorpusNotFoundError
    from ..data.prepare import prepare
    from ..data.readers import DataError

    overrides: dict = {}
    on_error = args.on_error
    if not args.config:
        overrides.update({"data.tasks": task_names(hold_out=False), "data.hold_out": task_names(hold_out=True)})
        on_error = on_error or "skip"
    if args.instructions:
        overrides["data.instruction_setting"] = args.instructions
    if args.seed is not None:
        overrides["data.seed"] = args.seed
    user = parse_overrides(args.set)
    if "data.on_error" in user and not args.on_error:
        on_error = None  # the explicit override wins over the no-config default
    overrides.update(user)
    cfg = load_run_config(args.config) if args.config else load_run_config(None)
    cfg = apply_overrides(cfg, overrides)
    from ..ray_session import setup_logging

    setup_logging("prepare", verbose=args.verbose)
    try:
        manifest = prepare(cfg, args.out, on_error=on_error, progress=not args.quiet, tasks=args.tasks,
                           data_dir=args.data_dir)
    except CorpusNotFoundError as e:  # bad input, like every missing file: exit 2
        print(f"instructedit prepare: error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"instructedit prepare: data error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        t = manifest["totals"]
        print(f"{args.out}: kept {t['kept']}, rejected {t['rejected']}, balanced out {t['balanced_out']}, "
              f"capped {t['capped']} of {t['read']} records")
    return 0

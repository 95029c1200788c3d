"""`instructedit study NAME`: run (or resume) a Ray Tune study of configs/studies/NAME.yaml."""

from __future__ import annotations

HELP = "run a Ray Tune study (task-scaling, instructions, convsent-balance, hparams, ...) tracked in MLflow"
DESCRIPTION = (
    "Runs the study NAME (configs/studies/NAME.yaml or a YAML path): each trial trains an editor with "
    "Ray Train, reporting val metrics to Tune (ASHA can stop weak trials), then tests its best "
    "checkpoint on the study's test tasks. The objective and the best trial are chosen on validation "
    "metrics of the training tasks only; test metrics are reported as results. MLflow gets one parent run per study and one nested run "
    "per trial; the parent holds summary.csv (trial x metrics) and the best trial's config. An "
    "interrupted study (Ctrl+C, a lost machine, --stop-after) continues with --resume without "
    "rerunning finished trials; on a fresh machine (no Tune folder), --skip-finished runs only the grid "
    "points that no earlier run of the study finished with test results in the MLflow store. --set key=value overrides the run config of every trial "
    "(train.max_steps=50) or, prefixed with study., the study itself (study.test.max_records=50)."
)


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="study name (configs/studies) or a study YAML path")
    p.add_argument("--trials", type=int, default=None,
                   help="grid/random: samples per grid point; optuna: trials (default: the YAML's)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time (default: the YAML's)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--skip-finished", action="store_true",
                   help="grid studies: leave out the points that earlier runs of this study finished (trial runs "
                        "FINISHED with test metrics in --tracking-uri's store); with --stop-after 1 it runs the "
                        "next point left. Not with --resume or optuna")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="run-config overrides for every trial, or study.<field>=value for the study")
    p.add_argument("--storage", default="runs/studies", help="folder of study experiment directories")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite "
                   "under ./mlruns)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="interrupt the study once N more trials finished (continue later with --resume)")
    p.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    p.add_argument("--show", action="store_true", help="print the resolved study and its base config, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and MLflow's own output here (default: they go to a log file named at the start)")


def _split_overrides(items: list[str]) -> tuple[dict, dict]:
    from ..config import parse_overrides

    parsed = parse_overrides(items)
    study = {k: v for k, v in parsed.items() if k.startswith("study.")}
    run = {k: v for k, v in parsed.items() if not k.startswith("study.")}
    return study, run


def _print_table(out, results: tuple[str, ...] = ()) -> None:
    """Trials with the objective (a val metric, which picks the best) and the study's test results."""
    cols = list(dict.fromkeys([out.metric, *results]))
    print(f"\n{'trial':<14} {'status':<8} " + " ".join(f"{c:>{max(12, len(c))}}" for c in cols) + "  searched")
    for r in sorted(out.trials, key=lambda r: r.trial_id):
        vals = []
        for c in cols:
            v = r.metrics.get(c)
            vals.append(f"{'' if v is None else f'{v * 100:.2f}':>{max(12, len(c))}}")
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        print(f"{r.trial_id:<14} {r.status:<8} " + " ".join(vals) + f"  {params}" + (f"  ({r.error})" if r.error else ""))
    print(f"(best trial by {out.metric}, a validation metric of the training tasks; test metrics are results only)")


def _points_left(spec, run_ov: dict, args) -> list[dict]:
    """--skip-finished: the grid points (Tune configs) no earlier run of this study finished; says
    which it skips, in which MLflow run it found each, and when nothing is left."""
    from ..studies.finished import describe, skip_finished

    left = skip_finished(spec, run_ov, args.tracking_uri, args.trials)
    for note in left.notes:
        print(f"[study {spec.name}] note: {note}")
    trials = args.trials or spec.trials
    for point, run_ids in left.done:
        times = f" ({len(run_ids)} of {trials} repeats)" if trials > 1 or len(run_ids) > 1 else ""
        print(f"[study {spec.name}] skip {describe(spec, point)}: finished in MLflow run "
              f"{', '.join(run_ids)}{times}")
    where = f"experiment {left.experiment!r}, {left.tracking_uri}"
    if not left.points:
        print(f"study {spec.name}: nothing left to run: all {left.total} trials finished ({where})")
    else:
        print(f"[study {spec.name}] {len(left.points)} of {left.total} trials left ({where}); "
              f"next: {describe(spec, left.points[0])}")
    return left.points


def run(args) -> int:
    import sys

    import yaml

    from ..config import ConfigError, to_dict
    from ..studies.spec import dump, list_studies, load_study

    if args.list or not args.name:
        for name in list_studies():
            spec = load_study(name, check=False)
            print(f"{name:<18} {spec.description}")
        return 0 if args.list else 2
    try:
        study_ov, run_ov = _split_overrides(args.overrides)
        spec = load_study(args.name, study_ov)
        if args.skip_finished:
            from ..studies.finished import skip_error

            why = skip_error(spec, args.resume)
            if why:
                print(f"instructedit study: {why}", file=sys.stderr)
                return 2
        if args.show:
            print(dump(spec))
            print("# base run config of every trial (before the searched values):")
            print(yaml.safe_dump(to_dict(spec.base_config(run_ov)), sort_keys=False))
            return 0
    except ConfigError as e:
        print(f"instructedit study: {e}", file=sys.stderr)
        return 2

    points = None
    if args.skip_finished:
        try:
            points = _points_left(spec, run_ov, args)
        except ConfigError as e:
            print(f"instructedit study: {e}", file=sys.stderr)
            return 2
        if not points:
            return 0

    from ..ray_session import setup_logging
    from ..studies.runner import run_study

    setup_logging("study", args.storage, verbose=args.verbose)

    try:
        out = run_study(spec, extra_overrides=run_ov, storage=args.storage, tracking_uri=args.tracking_uri,
                        resume=args.resume, trials=args.trials, max_concurrent=args.max_concurrent,
                        stop_after=args.stop_after, address=args.address, verbose=not args.quiet,
                        points=points)
    except (FileExistsError, FileNotFoundError, ConfigError) as e:
        print(f"instructedit study: {e}", file=sys.stderr)
        return 2

    _print_table(out, spec.results)
    print(f"\nsummary:  {out.summary_path}")
    print(f"MLflow:   parent run {out.parent_run_id} (experiment {out.experiment!r}, {out.tracking_uri})")
    if out.best is not None:
        print(f"best:     trial {out.best.trial_id} ({out.metric} = {out.best.metrics[out.metric] * 100:.2f}); "
              f"MLflow run {out.best.run_id}")
        print(f"checkpoint: {out.best_checkpoint}")
        print("config:")
        print("  " + yaml.safe_dump(to_dict(out.best_config), sort_keys=False).replace("\n", "\n  ").rstrip())
    if not out.finished:
        how = f"`instructedit study {args.name} --resume --storage {args.storage}`"
        if args.stop_after:  # a pause the user asked for, not a failure: exit 0
            print(f"\nstudy paused by --stop-after {args.stop_after}: {out.left} trial(s) left; continue "
                  f"with {how} (or, without this study folder, `--skip-finished`)")
            return 0
        print(f"\nstudy interrupted: continue with {how}")
        return 130
    return 0 if out.count("done") else 1

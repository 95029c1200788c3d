"""`instructedit train`: train one editor on Ray Train, tracked in MLflow."""

from __future__ import annotations

import argparse

HELP = "train an editor on Ray Train (local or a cluster), tracked in MLflow"
DESCRIPTION = (
    "Train one MEND-style editor over the run's tasks on Ray Train workers (DDP over the "
    "hypernetwork; the global batch stays train.batch_size whatever --workers). Validates every "
    "train.val_every steps, keeps the best train.keep_checkpoints editor-only checkpoints under "
    "train.storage_path, restarts lost workers from the last checkpoint (train.max_failures), and logs "
    "params, losses, val metrics and artifacts to one MLflow run. Prints where the best checkpoint "
    "and the MLflow run are. --seeds 0 1 2 trains one run per training seed (train.seed; data.seed "
    "and so the splits stay shared), named <name>-s<seed>, each its own MLflow run tagged seed and "
    "seed_group=<name>."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run YAML (a path or a name under configs/runs)")
    p.add_argument("--workers", type=int, help="Ray Train workers (overrides train.num_workers)")
    p.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                   help="continue an earlier training from its last checkpoint and MLflow run: the latest "
                        "run of this config's name under the storage path, or the Ray run name RUN")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else the project's sqlite "
                   "store <checkout>/mlruns/mlflow.db)")
    p.add_argument("--storage-path", help="where Ray Train keeps checkpoints (overrides train.storage_path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.max_steps=100 (repeatable)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, metavar="N", help="training seed (overrides train.seed)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="N",
                       help="one run per training seed, one after another: runs <name>-s<N>, MLflow tag "
                            "seed_group=<name> (data.seed is kept, so every seed sees the same splits)")
    p.add_argument("--quiet", action="store_true", help="no per-step progress")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and MLflow's own output here (default: they go to a log file named at the start)")


def plan(args: argparse.Namespace) -> tuple[list, dict[str, str]]:
    """The configs to train (one per seed) and the tags they share; no training."""
    from ..config import ConfigError, load_run_config, parse_overrides
    from ..train.run import seed_configs

    overrides = parse_overrides(args.set)
    if args.workers:
        overrides["train.num_workers"] = args.workers
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    cfg = load_run_config(args.config, overrides)
    if not args.seeds:
        return [cfg], {}
    if isinstance(args.resume, str):
        raise ConfigError("--resume RUN names one Ray run; with --seeds use --resume alone (each seed "
                          "continues the latest run of <name>-s<seed>)")
    if "train.seed" in overrides:
        raise ConfigError("--seeds sets train.seed per run: drop --set train.seed")
    return seed_configs(cfg, args.seeds), {"seed_group": cfg.name}


def run(args: argparse.Namespace) -> int:
    import sys

    from .. import tracking
    from ..config import ConfigError
    from ..train.run import train_run

    cfgs, group_tags = plan(args)
    from ..ray_session import setup_logging

    setup_logging("train", args.storage_path or cfgs[0].train.storage_path or "runs", verbose=args.verbose)
    outs, failed = [], []
    for cfg in cfgs:
        print(f"train: {cfg.name} ({cfg.mode}) on {cfg.model}, tasks {', '.join(cfg.data.tasks)}; "
              f"{cfg.train.num_workers} worker(s), global batch {cfg.train.batch_size}, up to "
              f"{cfg.train.max_steps} steps, seed {cfg.train.seed}", flush=True)
        try:
            out = train_run(cfg, address=args.address, resume=args.resume, tracking_uri=args.tracking_uri,
                            storage_path=args.storage_path, verbose=not args.quiet, extra_tags=group_tags or None)
        except (ConfigError, FileNotFoundError):
            raise  # bad input is the same for every seed
        except Exception as e:
            if len(cfgs) == 1:
                raise
            # One lost seed must not cost the others; the run has ended FAILED in MLflow.
            print(f"train: seed {cfg.train.seed} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failed.append(cfg.train.seed)
            continue
        outs.append((cfg, out))
        uri = tracking.redact_text(out.tracking_uri)
        print(f"\ndone in {out.elapsed_s:.0f} s: {out.stopped} after {out.steps} steps; best step {out.best_step}")
        for k, v in sorted(out.best_metrics.items()):
            if k.count("/") == 1:
                print(f"  {k:<24} {v:.4f}")
        print(f"best checkpoint: {out.checkpoint}")
        print(f"MLflow run:      {out.run_id} (experiment {out.experiment!r}, store {uri})")
        print(f"open the UI:     instructedit ui --tracking-uri '{uri}'")
    if group_tags:
        _seed_summary(outs, failed, group_tags["seed_group"])
    return 0 if outs and not failed and all(o.checkpoint for _, o in outs) else 1


def _seed_summary(outs: list, failed: list[int], group: str) -> None:
    """Best val metrics per seed and their mean and spread (selection numbers, not test results)."""
    import statistics

    keys = sorted({k for _, o in outs for k in o.best_metrics if k.count("/") == 1})
    print(f"\nseed group {group!r} (MLflow tag seed_group={group}): {len(outs)} run(s) done"
          + (f", seed(s) {failed} failed" if failed else ""))
    print(f"{'seed':>6} {'best step':>10} " + " ".join(f"{k:>18}" for k in keys) + "  MLflow run")
    for cfg, o in outs:
        vals = " ".join(f"{o.best_metrics[k]:>18.4f}" if k in o.best_metrics else f"{'':>18}" for k in keys)
        print(f"{cfg.train.seed:>6} {o.best_step:>10} {vals}  {o.run_id}")
    if len(outs) > 1:
        cols = []
        for k in keys:
            v = [o.best_metrics[k] for _, o in outs if k in o.best_metrics]
            cols.append(f"{statistics.mean(v):>9.4f}±{statistics.stdev(v) if len(v) > 1 else 0.0:<8.4f}")
        print(f"{'mean':>6} {'':>10} " + " ".join(f"{c:>18}" for c in cols) + "  (± sd over seeds)")

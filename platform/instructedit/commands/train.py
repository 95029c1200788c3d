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
    "and the MLflow run are."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run YAML (a path or a name under configs/runs)")
    p.add_argument("--workers", type=int, help="Ray Train workers (overrides train.num_workers)")
    p.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                   help="continue an earlier training from its last checkpoint and MLflow run: the latest "
                        "run of this config's name under the storage path, or the Ray run name RUN")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite under ./mlruns)")
    p.add_argument("--storage-path", help="where Ray Train keeps checkpoints (overrides train.storage_path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.max_steps=100 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no per-step progress")


def run(args: argparse.Namespace) -> int:
    from .. import tracking
    from ..config import load_run_config, parse_overrides
    from ..train.run import train_run

    overrides = parse_overrides(args.set)
    if args.workers:
        overrides["train.num_workers"] = args.workers
    cfg = load_run_config(args.config, overrides)
    print(f"train: {cfg.name} ({cfg.mode}) on {cfg.model}, tasks {', '.join(cfg.data.tasks)}; "
          f"{cfg.train.num_workers} worker(s), global batch {cfg.train.batch_size}, up to "
          f"{cfg.train.max_steps} steps", flush=True)
    out = train_run(cfg, address=args.address, resume=args.resume, tracking_uri=args.tracking_uri,
                    storage_path=args.storage_path, verbose=not args.quiet)
    uri = tracking.redact_text(out.tracking_uri)
    print(f"\ndone in {out.elapsed_s:.0f} s: {out.stopped} after {out.steps} steps; best step {out.best_step}")
    for k, v in sorted(out.best_metrics.items()):
        if k.count("/") == 1:
            print(f"  {k:<24} {v:.4f}")
    print(f"best checkpoint: {out.checkpoint}")
    print(f"MLflow run:      {out.run_id} (experiment {out.experiment!r}, store {uri})")
    print(f"open the UI:     instructedit ui --tracking-uri '{uri}'")
    return 0 if out.checkpoint else 1

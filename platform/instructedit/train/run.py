"""One tracked training: config -> records -> Ray Train -> MLflow run (what `instructedit train` does).

The driver owns the MLflow run: flattened config as params, the tags of docs/conventions.md, the
artifacts config.yaml, manifest.json, checkpoint/ (best editor) and val_table.csv. Rank 0 of the
workers logs the training losses, system metrics and val metrics into the same run by id while it
trains. Any exception (a failed Ray run included) ends the run FAILED (tracking.run).

Training reads the train and val splits of `data.tasks` only (`training_records`); a hold-out task
(data.hold_out, or a task YAML with hold_out: true) is refused. Seeds: `seed_configs` gives one
config per training seed (`train.seed` and the name `<name>-s<seed>`); `data.seed` stays, so every
run of a seed group shares its splits, instruction tags and test records. Each run carries the
param and tag `seed`; runs of one `instructedit train --seeds` call share the tag `seed_group`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import tracking
from ..config import ConfigError, RunConfig, apply_overrides, flatten, load_task, to_dict
from ..data.record import digest_records
from ..editor import methods
from ..provenance import budget, model_source
from .checkpoint import EDITOR_FILE
from .trainer import RayTrainResult, WorkerHooks, init_ray, storage_root, train_on_ray

RUN_INFO = "instructedit.json"  # in storage/<name>/: which MLflow run a resumed training continues


@dataclass
class TrainOutcome:
    run_id: str
    experiment: str
    tracking_uri: str
    name: str  # the Ray Train run name (storage/<name>)
    checkpoint: Path | None  # best editor.pt (in Ray's storage)
    best_metrics: dict[str, float]
    best_step: int
    steps: int
    stopped: str
    elapsed_s: float
    ray: RayTrainResult | None = field(default=None, repr=False)


def dataset_manifest(cfg: RunConfig, train: list, val: list) -> tuple[str, str]:
    """(manifest.json text, dataset hash). With prepared data: `prepare`'s manifest and its sha256;
    otherwise a manifest of the records built in-process and a hash of their content."""
    if cfg.data.prepared_dir:
        p = Path(cfg.data.prepared_dir) / "manifest.json"
        if p.exists():
            text = p.read_text()
            return text, hashlib.sha256(text.encode()).hexdigest()
    h = hashlib.sha256()
    counts: dict[str, dict[str, int]] = {}
    for split, recs in (("train", train), ("val", val)):
        digest_records(h, recs)
        for r in sorted(recs, key=lambda r: r.task):
            counts.setdefault(r.task, {}).setdefault(split, 0)
            counts[r.task][split] += 1
    manifest = {"prepared_dir": None, "built_in_process": True, "tasks": list(cfg.data.tasks),
                "instruction_setting": cfg.data.instruction_setting, "seed": cfg.data.seed,
                "max_records": cfg.data.max_records, "counts": counts, "records_sha256": h.hexdigest()}
    return json.dumps(manifest, indent=2) + "\n", h.hexdigest()


def run_tags(cfg: RunConfig, dataset_hash: str) -> dict[str, str]:
    # keys: provenance.RUN_TAG_KEYS (tests check they agree)
    return {"kind": "train", "mode": cfg.mode, "method": methods.get(cfg.mode).display, "tasks": ",".join(cfg.data.tasks),
            "dataset_hash": dataset_hash, "instruction_setting": cfg.data.instruction_setting,
            "seed": str(cfg.train.seed), "model": cfg.model, "model_source": model_source(cfg.model)}


def seed_name(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


def seed_configs(cfg: RunConfig, seeds: list[int] | tuple[int, ...]) -> list[RunConfig]:
    """One config per training seed: train.seed and the run name change, nothing else (data.seed
    stays, so the splits, instruction tags, val subset and test records are shared)."""
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {list(seeds)} repeats a seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"seeds: {s!r} is not a non-negative integer")
    return [apply_overrides(cfg, {"train.seed": s, "name": seed_name(cfg.name, s)}) for s in seeds]


def training_records(cfg: RunConfig) -> tuple[list, list]:
    """(train, val) records of the run's training tasks (data.tasks) only: a hold-out task's records
    never reach training or checkpoint selection."""
    from ..data.pipeline import load_records

    for t in cfg.data.tasks:
        if t in cfg.data.hold_out or load_task(t).hold_out:
            raise ConfigError(f"data.tasks: {t!r} is a hold-out task (configs/tasks/{t}.yaml hold_out: true or "
                              f"data.hold_out); it is never trained on")
    tasks = list(cfg.data.tasks)
    return load_records(cfg, "train", tasks=tasks), load_records(cfg, "val", tasks=tasks)


def _latest_run_name(root: Path, prefix: str) -> str | None:
    # Only `<prefix>-<timestamp>`: the runs of `<prefix>-s0` (a seed) or `<prefix>-fast` are other configs.
    stamp = re.compile(re.escape(prefix) + r"-\d{8}-\d{6}-\d{3}")
    runs = [d for d in root.glob(f"{prefix}-*") if stamp.fullmatch(d.name) and (d / RUN_INFO).exists()]
    return max(runs, key=lambda d: d.stat().st_mtime).name if runs else None


def val_table(run_id: str, tasks: list[str], best_step: int) -> list[dict]:
    """One row per (validation step, task) plus the task average ('avg'), from the run's metrics."""
    keys = [k for k in tracking.get_run(run_id).data.metrics if k.startswith("val/")]
    rows: dict[tuple[int, str], dict] = {}
    for key in keys:
        rest = key[len("val/"):]
        task = next((t for t in tasks if rest.startswith(t + "/")), None)
        metric = rest[len(task) + 1:] if task else rest
        for step, value in tracking.metric_history(run_id, key):
            row = rows.setdefault((step, task or "avg"), {"step": step, "task": task or "avg",
                                                          "best": int(step == best_step)})
            row[metric] = value
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1] == "avg", k[1]))]


def write_csv(rows: list[dict], path: Path) -> Path:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def train_run(
    cfg: RunConfig,
    *,
    address: str | None = None,
    resume: bool | str = False,
    tracking_uri: str | None = None,
    storage_path: str | None = None,
    worker_hooks: WorkerHooks | None = None,
    verbose: bool = True,
    extra_tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    callbacks: list | None = None,
) -> TrainOutcome:
    """Train one editor on Ray Train and track it in MLflow. `resume`: True = the latest run of this
    config name under the storage path, or a run name; it continues that Ray run and MLflow run."""
    t0 = time.time()
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    uri = tracking.resolve_tracking_uri(tracking_uri or cfg.tracking_uri or None)
    root = storage_root(cfg, storage_path)
    prior_run_id = None
    if resume:
        name = resume if isinstance(resume, str) else _latest_run_name(root, cfg.name)
        if not name or not (root / name / RUN_INFO).exists():
            raise FileNotFoundError(f"nothing to resume: no run {name or cfg.name + '-*'} under {root}")
        prior_run_id = json.loads((root / name / RUN_INFO).read_text())["mlflow_run_id"]
        say(f"[train] resuming Ray run {root / name} (MLflow run {prior_run_id})")
    else:
        name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{int(t0 * 1000) % 1000:03d}"

    train, val = training_records(cfg)
    manifest_text, dataset_hash = dataset_manifest(cfg, train, val)
    tags = {**run_tags(cfg, dataset_hash), "ray_run": name, **(extra_tags or {})}

    params = None if prior_run_id else {**flatten(to_dict(cfg)), "seed": cfg.train.seed}
    with tracking.run(cfg.experiment, name, params=params, tags=tags,
                      tracking_uri=uri, run_id=prior_run_id, parent_run_id=parent_run_id) as run_id:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / RUN_INFO).write_text(json.dumps({"mlflow_run_id": run_id, "tracking_uri": uri,
                                                        "experiment": cfg.experiment}) + "\n")
        tracking.log_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), "config.yaml")
        tracking.log_text(manifest_text, "manifest.json")
        say(f"[train] MLflow run {run_id} (experiment {cfg.experiment!r}, {uri})")
        init_ray(address)
        result = train_on_ray(cfg, train, val, name=name, storage_path=str(root), mlflow_run_id=run_id,
                              tracking_uri=uri, worker_hooks=worker_hooks, verbose=verbose, callbacks=callbacks)
        ckpt = result.best_checkpoint / EDITOR_FILE if result.best_checkpoint else None
        if ckpt is not None and ckpt.exists():
            tracking.log_artifact(ckpt, "checkpoint")
            # MLflow 3 lists a run without a model output under "Evaluation runs": record the editor.
            tracking.log_model_output(run_id, f"{cfg.name}-editor", step=result.best_step,
                                      params={"checkpoint": "checkpoint/editor.pt", "mode": cfg.mode,
                                              "model": cfg.model})
        with tempfile.TemporaryDirectory() as tmp:
            rows = val_table(run_id, list(cfg.data.tasks), result.best_step)
            if rows:
                tracking.log_artifact(write_csv(rows, Path(tmp) / "val_table.csv"))
        tracking.set_tags({"stopped": result.stopped, "best_step": str(result.best_step),
                           "checkpoint_path": str(ckpt or ""),
                           # the budget: training edits seen in all, and by the selected checkpoint
                           "train_edits": str(budget(result.steps, cfg.train.batch_size)),
                           "checkpoint_edits": str(budget(result.best_step, cfg.train.batch_size))})
        tracking.log_metrics({"train/steps": result.steps, "train/elapsed_s": time.time() - t0})
    return TrainOutcome(run_id, cfg.experiment, uri, name, ckpt, result.best_metrics, result.best_step,
                        result.steps, result.stopped, time.time() - t0, result)

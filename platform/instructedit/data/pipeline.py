"""Corpora -> instruction-tagged, split edit records: the pure transforms and `load_records`.

`load_records(cfg, split)` is what training and evaluation call. It reads the parquet written by
`instructedit prepare` (data/prepare.py, the Ray Data path, which runs these same functions) when
`cfg.data.prepared_dir` is set, else builds the records in-process (a second or two for every shared
corpus); both give identical records.

Splits come from a stable hash of the case id (not of the seed: every seed sees the same test set);
a source file with role train/val/test feeds that split. A val or test record whose prompt (case and
spacing aside) is also the prompt of a train record of its task joins train, so no evaluated prompt
was trained on (the shared corpora hold a few such pairs). Records without a locality probe
borrow one from another record of the same task and split (kind `borrowed`). A task with
`balance_to: N` has its train split down-sampled (seeded) to N records; val and test stay whole, and
a train split smaller than N is kept as it is. Nothing is dropped silently: rejected and dropped
records are returned (`TaskResult`), and `prepare` writes and counts them.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..config import ConfigError, DataConfig, RunConfig, TaskConfig, load_task, task_names
from .corpora import resolve_data_dir
from .instruction_sets import resolve_pool
from .instructions import check_setting, retag, tag
from .readers import DataError, other_topic_locality, read_source, stable_int, stable_unit
from .record import ARROW_SCHEMA, EditRecord, table_to_records

SPLITS = ("train", "val", "test")


def __getattr__(name: str):
    """ALL_TASKS / ALL_HOLD_OUT: every training / hold-out task of the registry (what `instructedit
    prepare` with no --config covers), in table order. Read when asked, not at import, so a bad task
    YAML fails the command that needs the list with its one-line ConfigError."""
    if name in ("ALL_TASKS", "ALL_HOLD_OUT"):
        return tuple(task_names(hold_out=name == "ALL_HOLD_OUT"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------ pure functions
def task_configs(names: list[str] | tuple[str, ...]) -> list[TaskConfig]:
    return [load_task(n) for n in names]


def run_tasks(cfg: RunConfig, tasks: list[str] | tuple[str, ...] | None = None) -> list[str]:
    names = list(tasks) if tasks else list(cfg.data.tasks) + list(cfg.data.hold_out)
    return list(dict.fromkeys(names))


def assign_split(case_id: str, role: str, fractions: tuple[float, float, float]) -> str:
    """train/val/test from the source role, or from a stable hash of the case id."""
    if role in SPLITS:
        return role
    if role != "all":
        raise ConfigError(f"source role must be all|train|val|test, got {role!r}")
    u = stable_unit(case_id, "split")
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def tag_and_split(record: EditRecord, task_cfg: TaskConfig, role: str, data: DataConfig,
                  pool=None) -> EditRecord:
    rec = tag(record, task_cfg, data.instruction_setting, data.seed, pool)
    rec.split = assign_split(rec.case_id, role, data.split_fractions)
    return rec


def borrow_locality(records: list[EditRecord], seed: int) -> list[EditRecord]:
    """Give every record without a locality probe one probe of another record (same list)."""
    pool = [(r.case_id, p) for r in records for p in r.locality]
    if not pool:
        return records
    out = []
    for r in records:
        if not r.locality:
            _, p = pool[stable_int(seed, r.case_id, "borrow") % len(pool)]
            r = replace(r, locality=[replace(p, kind="borrowed", answer=list(p.answer))])
        out.append(r)
    return out


def balance(records: list[EditRecord], n: int | None, seed: int) -> tuple[list[EditRecord], list[EditRecord]]:
    """Seeded down-sample to n records (kept in input order) -> (kept, dropped)."""
    if n is None or len(records) <= n:
        return records, []
    keep = set(sorted(range(len(records)), key=lambda i: stable_unit(seed, records[i].case_id, "balance"))[:n])
    return [r for i, r in enumerate(records) if i in keep], [r for i, r in enumerate(records) if i not in keep]


def cap(records: list[EditRecord], n: int | None) -> tuple[list[EditRecord], list[EditRecord]]:
    """data.max_records: a fixed (seed-independent) subset of n records -> (kept, dropped)."""
    if n is None or len(records) <= n:
        return records, []
    keep = set(sorted(range(len(records)), key=lambda i: stable_unit(records[i].case_id, "cap"))[:n])
    return [r for i, r in enumerate(records) if i in keep], [r for i, r in enumerate(records) if i not in keep]


def prompt_key(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def join_train_prompts(records: list[EditRecord]) -> list[EditRecord]:
    """Val/test records whose prompt is also a train record's prompt (same task) move to train."""
    train = {prompt_key(r.prompt) for r in records if r.split == "train"}
    return [replace(r, split="train") if r.split != "train" and prompt_key(r.prompt) in train else r
            for r in records]


def finish_task(records: list[EditRecord], task_cfg: TaskConfig, data: DataConfig
                ) -> tuple[dict[str, list[EditRecord]], list[dict[str, Any]]]:
    """Records of one task (already tagged and split, in source order) -> ({split: records}, dropped)."""
    by_split: dict[str, list[EditRecord]] = {s: [] for s in SPLITS}
    for r in join_train_prompts(records):
        by_split[r.split].append(r)
    dropped: list[dict[str, Any]] = []
    for split in SPLITS:
        # ConvSent drawdown probes come from the same split, then any record still without a
        # locality probe borrows one.
        recs = borrow_locality(other_topic_locality(by_split[split], data.seed), data.seed)
        n_balance = data.balance.get(task_cfg.name, task_cfg.balance_to)  # data.balance overrides the YAML
        if split == "train" and n_balance is not None:
            recs, out = balance(recs, n_balance, data.seed)
            dropped += [{"task": task_cfg.name, "split": split, "case_id": r.case_id,
                         "reason": f"balance_to={n_balance}"} for r in out]
        recs, out = cap(recs, data.max_records)
        dropped += [{"task": task_cfg.name, "split": split, "case_id": r.case_id,
                     "reason": f"max_records={data.max_records}"} for r in out]
        by_split[split] = recs
    return by_split, dropped


@dataclass
class TaskResult:
    task: str
    splits: dict[str, list[EditRecord]]
    rejects: list[DataError] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    source_records: dict[str, int | None] = field(default_factory=dict)  # relative path -> records read


def build_task(task_cfg: TaskConfig, data_dir: Path, data: DataConfig, on_error: str | None = None) -> TaskResult:
    """The whole transformation of one task in this process (the reference for the Ray path)."""
    on_error = on_error or data.on_error
    pool = resolve_pool(task_cfg, data.instruction_set)
    records: list[EditRecord] = []
    rejects: list[DataError] = []
    counts: dict[str, int | None] = {}
    for src in task_cfg.sources:
        path = data_dir / src.path
        good, bad = read_source(path, src.reader, task_cfg.name, data.seed, on_error=on_error)
        records += [tag_and_split(r, task_cfg, src.role, data, pool) for _, r in good]
        rejects += bad
        counts[src.path] = len(good) + len(bad) if not (bad and bad[0].index is None) else None
    splits, dropped = finish_task(records, task_cfg, data)
    return TaskResult(task_cfg.name, splits, rejects, dropped, counts)


def load_records(cfg: RunConfig, split: str, tasks: list[str] | None = None) -> list[EditRecord]:
    """The records of `split` for the run's tasks (default: data.tasks + data.hold_out).

    Reads `cfg.data.prepared_dir` when set (re-tagging if the run asks for another instruction
    setting than the one prepared), else builds in-process from the corpora.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    check_setting(cfg.data.instruction_setting)
    names = run_tasks(cfg, tasks)
    out: list[EditRecord] = []
    if cfg.data.prepared_dir:
        root = Path(cfg.data.prepared_dir)
        manifest = _read_manifest(root)
        other_tags = any(manifest.get(k) != v for k, v in (
            ("instruction_setting", cfg.data.instruction_setting), ("seed", cfg.data.seed),
            ("instruction_set", cfg.data.instruction_set)))
        if tuple(manifest.get("split_fractions", cfg.data.split_fractions)) != tuple(cfg.data.split_fractions):
            warnings.warn(f"{root} was prepared with split_fractions {manifest.get('split_fractions')}, "
                          f"the run asks for {list(cfg.data.split_fractions)}: using the prepared splits")
        for name in names:
            load_task(name)  # an unknown task fails here, naming the known ones
            path = root / name / f"{split}.parquet"
            if not path.exists():
                raise ConfigError(f"{path} not found: prepare it with `instructedit prepare --tasks {name} "
                                  f"--out {root}` or drop data.prepared_dir")
            recs = table_to_records(pq.read_table(path, schema=ARROW_SCHEMA))
            if other_tags:
                recs = retag(recs, cfg.data.instruction_setting, cfg.data.seed, cfg.data.instruction_set)
            recs, _ = cap(recs, cfg.data.max_records)
            out += recs
        return out
    data_dir = resolve_data_dir(cfg=cfg)
    for name in names:
        res = build_task(load_task(name), data_dir, cfg.data)
        if res.rejects:  # on_error=skip: say what was left out, never drop silently
            first = res.rejects[0]
            print(f"[data] {name}: skipped {len(res.rejects)} bad record(s), first: {first}", file=sys.stderr)
        out += res.splits[split]
    return out


def _read_manifest(root: Path) -> dict[str, Any]:
    p = root / "manifest.json"
    if not p.exists():
        raise ConfigError(f"data.prepared_dir {root}: no manifest.json (run `instructedit prepare --out {root}`)")
    return json.loads(p.read_text())

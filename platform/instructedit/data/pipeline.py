"""Corpora -> instruction-tagged, split edit records.

Two paths share the same pure functions, so they give identical records:
  * `load_records(cfg, split)`: what training and evaluation call. It reads the parquet written by
    `instructedit prepare` when `cfg.data.prepared_dir` is set, else builds the records in-process
    (a second or two for every shared corpus).
  * `prepare(cfg, out_dir)`: the Ray Data pipeline, read -> validate -> tag -> split -> (per task:
    borrow locality, balance, cap) -> parquet `OUT/<task>/<split>.parquet` + `OUT/manifest.json`.

Splits come from a stable hash of the case id (not of the seed: every seed sees the same test set);
a source file with role train/val/test feeds that split whole. Records without a locality probe
borrow one from another record of the same task and split (kind `borrowed`). A task with
`balance_to: N` has its train split down-sampled (seeded) to N records; val and test stay whole, and
a train split smaller than N is kept as it is. Nothing is dropped silently: rejected records go to
`rejects.jsonl`, balanced-out and capped ones to `dropped.jsonl`, and the manifest counts all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError, DataConfig, RunConfig, TaskConfig, load_task
from ..instructions.sets import resolve_pool
from .instructions import check_setting, tag
from .readers import DataError, other_topic_locality, parsed_source, read_source, stable_int, stable_unit
from .record import ARROW_SCHEMA, SCHEMA_VERSION, EditRecord, records_to_table, table_to_records

SPLITS = ("train", "val", "test")
# `instructedit prepare` with no --config covers every shared corpus.
ALL_TASKS = ("counterfact", "recent", "convsent", "counterfact-mend")
ALL_HOLD_OUT = ("zsre",)
KNOWEDIT_REPO = "zjunlp/KnowEdit"
# KnowEdit hub layout -> the layout the task YAMLs read (knowedit/<file>).
KNOWEDIT_FILES = {
    "benchmark/wiki_counterfact/train_cf.json": "knowedit/train_cf.json",
    "benchmark/wiki_counterfact/test_cf.json": "knowedit/test_cf.json",
    "benchmark/wiki_recent/recent_train.json": "knowedit/recent_train.json",
    "benchmark/wiki_recent/recent_test.json": "knowedit/recent_test.json",
    "benchmark/Convsent/blender_train.json": "knowedit/blender_train.json",
    "benchmark/Convsent/blender_val.json": "knowedit/blender_val.json",
    "benchmark/Convsent/blender_test.json": "knowedit/blender_test.json",
    "benchmark/ZsRE/ZsRE-test-all.json": "knowedit/ZsRE-test-all.json",
}


class CorpusNotFoundError(FileNotFoundError):
    """No data directory with the corpora; the message says how to get them."""


# ------------------------------------------------------------------------------------ data dir
def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]  # platform/instructedit/data/pipeline.py


def resolve_data_dir(data_dir: str | os.PathLike | None = None, cfg: RunConfig | None = None) -> Path:
    """--data-dir, else cfg.data.data_dir, else $INSTRUCTEDIT_DATA, else ../shared/data (from the
    working directory, then from the repository)."""
    explicit = data_dir or (cfg.data.data_dir if cfg is not None else "") or os.environ.get("INSTRUCTEDIT_DATA")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise CorpusNotFoundError(f"data directory {p} does not exist.\n{HOW_TO_GET_DATA}")
        return p
    tried = [Path.cwd().parent / "shared" / "data", _repo_root().parent / "shared" / "data"]
    for p in tried:
        if p.is_dir():
            return p
    raise CorpusNotFoundError(
        f"no corpora found (tried --data-dir, data.data_dir, $INSTRUCTEDIT_DATA, {', '.join(map(str, tried))}).\n"
        + HOW_TO_GET_DATA
    )


HOW_TO_GET_DATA = (
    "Get the KnowEdit benchmark (MIT) with network access:\n"
    "  python -c \"from instructedit.data.pipeline import download_knowedit; download_knowedit('data')\"\n"
    "(or `huggingface-cli download zjunlp/KnowEdit --repo-type dataset` and copy the benchmark/*/ files "
    "into data/knowedit/), then pass --data-dir data or set INSTRUCTEDIT_DATA=data. The MEND-format "
    "CounterFact/ZsRE files (tasks counterfact-mend, zsre) come from the MEND and ROME releases; put "
    "them under data/mend-format/."
)


def download_knowedit(dest: str | os.PathLike, revision: str | None = None) -> Path:
    """Download KnowEdit from the Hugging Face hub into `dest/knowedit/` (needs network)."""
    from huggingface_hub import hf_hub_download

    dest = Path(dest)
    (dest / "knowedit").mkdir(parents=True, exist_ok=True)
    for remote, local in KNOWEDIT_FILES.items():
        try:
            got = hf_hub_download(KNOWEDIT_REPO, remote, repo_type="dataset", revision=revision)
        except OSError as e:  # hub HTTP errors are OSErrors; a missing file should not stop the others
            print(f"download_knowedit: skipped {remote}: {e}", file=sys.stderr)
            continue
        shutil.copyfile(got, dest / local)
    return dest


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


def finish_task(records: list[EditRecord], task_cfg: TaskConfig, data: DataConfig
                ) -> tuple[dict[str, list[EditRecord]], list[dict[str, Any]]]:
    """Records of one task (already tagged and split, in source order) -> ({split: records}, dropped)."""
    by_split: dict[str, list[EditRecord]] = {s: [] for s in SPLITS}
    for r in records:
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
        retag = any(manifest.get(k) != v for k, v in (
            ("instruction_setting", cfg.data.instruction_setting), ("seed", cfg.data.seed),
            ("instruction_set", cfg.data.instruction_set)))
        if tuple(manifest.get("split_fractions", cfg.data.split_fractions)) != tuple(cfg.data.split_fractions):
            warnings.warn(f"{root} was prepared with split_fractions {manifest.get('split_fractions')}, "
                          f"the run asks for {list(cfg.data.split_fractions)}: using the prepared splits")
        for name in names:
            task_cfg = load_task(name)
            path = root / name / f"{split}.parquet"
            if not path.exists():
                raise ConfigError(f"{path} not found: prepare it with `instructedit prepare --tasks {name} "
                                  f"--out {root}` or drop data.prepared_dir")
            recs = table_to_records(pq.read_table(path, schema=ARROW_SCHEMA))
            if retag:
                pool = resolve_pool(task_cfg, cfg.data.instruction_set)
                recs = [tag(r, task_cfg, cfg.data.instruction_setting, cfg.data.seed, pool) for r in recs]
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- Ray Data stages
# Rows between stages: {task, src, idx, role, case_id, ok, payload}; payload is the record (or the
# error) as JSON, which keeps Arrow from having to unify nested, partly empty structures.
_CHUNK_BYTES = 1 << 20


def _source_items(task_cfgs: list[TaskConfig], data_dir: Path) -> list[dict[str, Any]]:
    items = []
    for t in task_cfgs:
        for i, src in enumerate(t.sources):
            path = data_dir / src.path
            size = path.stat().st_size if path.exists() else 0
            n_chunks = max(1, min(8, size // _CHUNK_BYTES))
            for k in range(n_chunks):
                items.append({"task": t.name, "src": i, "path": str(path), "reader": src.reader, "role": src.role,
                              "chunk": k, "n_chunks": n_chunks})
    return items


def _row(item: dict[str, Any], idx: int, case_id: str, ok: bool, payload: str) -> dict[str, Any]:
    return {"task": item["task"], "src": item["src"], "idx": idx, "role": item["role"], "path": item["path"],
            "reader": item["reader"], "case_id": case_id, "ok": ok, "payload": payload}


def _read_stage(item: dict[str, Any]) -> list[dict[str, Any]]:
    """read: one chunk (every n-th record) of a source file -> raw records."""
    try:
        raws, ids = parsed_source(item["path"], item["task"])
    except DataError as e:
        return [_row(item, -1, "", False, json.dumps(e.to_dict(), ensure_ascii=False))] if item["chunk"] == 0 else []
    return [_row(item, i, ids[i], True, "") for i in range(item["chunk"], len(raws), item["n_chunks"])]


class _StageContext:
    """What the stages need: the data config, task configs and instruction pools."""

    def __init__(self, data: dict[str, Any], task_names: list[str]):
        self.data = DataConfig(**{**data, "split_fractions": tuple(data["split_fractions"]),
                                  "tasks": tuple(data["tasks"]), "hold_out": tuple(data["hold_out"])})
        self.tasks = {n: load_task(n) for n in task_names}
        self.pools = {n: resolve_pool(t, self.data.instruction_set) for n, t in self.tasks.items()}


_CONTEXTS: dict[str, _StageContext] = {}


def _Stage(data: dict[str, Any], task_names: list[str]) -> _StageContext:
    """One context per worker process and configuration (YAML is parsed once, not per batch)."""
    key = json.dumps([data, task_names], sort_keys=True, default=str)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = _StageContext(data, task_names)
    return _CONTEXTS[key]


def _validate(row: dict[str, Any], st: _StageContext) -> EditRecord:
    """validate: raw record -> EditRecord through its format's reader (DataError if bad)."""
    from .readers import get_reader

    path, reader, i = row["path"], row["reader"], row["idx"]
    raws, ids = parsed_source(path, row["task"])
    return get_reader(reader)(raws[i], task=row["task"], case_id=ids[i], file=path, index=i,
                              seed=st.data.seed)


def _validate_tag_split_stage(batch: pa.Table, data: dict[str, Any], task_names: list[str]) -> pa.Table:
    """validate -> tag (seeded instruction) -> split (stable hash or file role), per record.

    One Ray Data stage: Ray would fuse three map stages into one operator anyway, and this saves two
    serialisation round trips per record.
    """
    st = _Stage(data, task_names)
    out = []
    for row in batch.to_pylist():
        if row["ok"]:
            try:
                rec = _validate(row, st)
            except DataError as e:
                row["ok"], row["payload"] = False, json.dumps(e.to_dict(), ensure_ascii=False)
            else:
                rec = tag_and_split(rec, st.tasks[row["task"]], row["role"], st.data, st.pools[row["task"]])
                row["payload"] = json.dumps(rec.to_row(), ensure_ascii=False)
        out.append(row)
    return pa.Table.from_pylist(out, schema=batch.schema)


def _finish_write(rows: list[dict[str, Any]], task_cfg: TaskConfig, data: DataConfig, out_dir: Path
                  ) -> list[dict[str, Any]]:
    """Per task: borrow locality, balance, cap, write `<task>/<split>.parquet`; return a summary."""
    rows = sorted(rows, key=lambda r: (r["src"], r["idx"]))
    task = task_cfg.name
    records = [EditRecord.from_row(json.loads(r["payload"])) for r in rows if r["ok"]]
    summary = [{"task": task, "kind": "reject", "split": "", "n": 1, "payload": r["payload"]}
               for r in rows if not r["ok"]]
    splits, dropped = finish_task(records, task_cfg, data)
    (out_dir / task).mkdir(parents=True, exist_ok=True)
    for split, recs in splits.items():
        pq.write_table(records_to_table(recs), out_dir / task / f"{split}.parquet")
        summary.append({"task": task, "kind": "count", "split": split, "n": len(recs), "payload": ""})
    summary += [{"task": task, "kind": "dropped", "split": d["split"], "n": 1, "payload": json.dumps(d)}
                for d in dropped]
    return summary


def init_ray() -> None:
    """Join an existing Ray (a connection, or RAY_ADDRESS for cluster jobs), else start a local one."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)


def _data_dict(data: DataConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(data)


def run_ray_pipeline(task_cfgs: list[TaskConfig], data_dir: Path, data: DataConfig, out_dir: Path,
                     progress: bool = True) -> list[dict[str, Any]]:
    """Ray Data does read -> validate -> tag -> split in parallel over file chunks; the per-task
    step (borrow locality, balance, cap: each needs the whole task) and the parquet writes run here
    as the records stream in, so OUT only has to be visible to the driver."""
    import ray.data

    init_ray()
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start)
    ctx.enable_progress_bars = ctx.print_on_execution_start = progress
    logger = logging.getLogger("ray.data")
    saved_level = logger.level
    if not progress:
        logger.setLevel(logging.ERROR)
    names = [t.name for t in task_cfgs]
    kw = {"data": _data_dict(data), "task_names": names}
    items = _source_items(task_cfgs, data_dir)
    ds = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(_read_stage)
        .map_batches(_validate_tag_split_stage, batch_format="pyarrow", batch_size=1024, fn_kwargs=kw)
    )
    by_task: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    n_rows = 0
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                by_task[row["task"]].append(row)
            n_rows += batch.num_rows
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        logger.setLevel(saved_level)
    _say(progress, f"prepare: {n_rows} records read, validated, tagged and split; writing parquet")
    summary: list[dict[str, Any]] = []
    for t in task_cfgs:
        summary += _finish_write(by_task[t.name], t, data, out_dir)
    return summary


# ----------------------------------------------------------------------------------- prepare
def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def prepare(cfg: RunConfig, out_dir: str | os.PathLike, on_error: str | None = None, progress: bool = True,
            tasks: list[str] | None = None, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write OUT/<task>/<split>.parquet, OUT/manifest.json, OUT/rejects.jsonl, OUT/dropped.jsonl.

    Everything is written to a temporary directory next to OUT and renamed into place at the end:
    a failed run leaves nothing behind and an existing OUT is replaced only on success.
    """
    t0 = time.time()
    on_error = on_error or cfg.data.on_error
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be raise|skip, got {on_error!r}")
    check_setting(cfg.data.instruction_setting)
    names = run_tasks(cfg, tasks)
    task_cfgs = task_configs(names)
    for t in task_cfgs:  # unknown instruction ids / empty pools fail before any work
        tag(EditRecord(task=t.name, case_id="probe", prompt="", target_new=""), t,
            cfg.data.instruction_setting, cfg.data.seed, resolve_pool(t, cfg.data.instruction_set))
    root = resolve_data_dir(data_dir, cfg)
    sources: dict[str, str] = {}
    for t in task_cfgs:
        for src in t.sources:
            p = root / src.path
            if not p.exists():
                raise CorpusNotFoundError(f"task {t.name!r}: source {p} not found.\n{HOW_TO_GET_DATA}")
            sources[src.path] = sha256_file(p)
    n_src = sum(len(t.sources) for t in task_cfgs)
    _say(progress, f"prepare: {len(names)} task(s) {names}, {n_src} source file(s) from {root}; "
                   f"instructions={cfg.data.instruction_setting} seed={cfg.data.seed} on_error={on_error}")

    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        rows = run_ray_pipeline(task_cfgs, root, cfg.data, tmp, progress)
        manifest, rejects, dropped = _summarise(rows, names, task_cfgs, cfg, on_error, root, sources)
        if rejects and on_error == "raise":
            first = rejects[0]
            raise DataError(first["file"], first["index"], first["field"],
                            first["reason"] + f" ({len(rejects)} bad record(s) in all; --on-error skip "
                            "writes them to rejects.jsonl and goes on)")
        with open(tmp / "rejects.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
        with open(tmp / "dropped.jsonl", "w") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in dropped)
        manifest["elapsed_s"] = round(time.time() - t0, 2)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        print(summary_table(manifest), flush=True)
        print(f"wrote {out} in {manifest['elapsed_s']:.1f} s", flush=True)
    return manifest


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _summarise(rows, names, task_cfgs, cfg: RunConfig, on_error, root: Path, sources):
    counts = {n: {s: 0 for s in SPLITS} for n in names}
    rejected = {n: 0 for n in names}
    balanced_out = {n: {s: 0 for s in SPLITS} for n in names}
    capped = {n: {s: 0 for s in SPLITS} for n in names}
    rejects, dropped = [], []
    for r in rows:
        if r["kind"] == "count":
            counts[r["task"]][r["split"]] = r["n"]
        elif r["kind"] == "reject":
            rejected[r["task"]] += 1
            rejects.append({"task": r["task"], **json.loads(r["payload"])})
        else:
            d = json.loads(r["payload"])
            (balanced_out if d["reason"].startswith("balance") else capped)[r["task"]][r["split"]] += 1
            dropped.append(d)
    order = {n: i for i, n in enumerate(names)}
    rejects.sort(key=lambda e: (order[e["task"]], e["file"], -1 if e["index"] is None else e["index"]))
    dropped.sort(key=lambda d: (order[d["task"]], d["split"], d["case_id"]))
    # Records per source file (None when the file is not valid JSON).
    source_records: dict[str, int | None] = {}
    for t in task_cfgs:
        for src in t.sources:
            try:
                source_records[src.path] = len(parsed_source(root / src.path, t.name)[0])
            except DataError:
                source_records[src.path] = None
    kept = sum(sum(c.values()) for c in counts.values())
    totals = {
        "read": sum(v for v in source_records.values() if v is not None),
        "kept": kept,
        "rejected": sum(rejected.values()),
        "balanced_out": sum(sum(c.values()) for c in balanced_out.values()),
        "capped": sum(sum(c.values()) for c in capped.values()),
    }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tasks": [n for n in names if not load_task(n).hold_out],
        "hold_out": [n for n in names if load_task(n).hold_out],
        "seed": cfg.data.seed,
        "instruction_setting": cfg.data.instruction_setting,
        "instruction_set": cfg.data.instruction_set,
        "split_fractions": list(cfg.data.split_fractions),
        "max_records": cfg.data.max_records,
        "balance_to": {t.name: t.balance_to for t in task_cfgs if t.balance_to is not None},
        "on_error": on_error,
        "data_dir": str(root),
        "sources": sources,
        "source_records": source_records,
        "counts": counts,
        "rejected": rejected,
        "balanced_out": balanced_out,
        "capped": capped,
        "totals": totals,
        "files": {n: {s: f"{n}/{s}.parquet" for s in SPLITS} for n in names},
    }
    return manifest, rejects, dropped


def summary_table(manifest: dict[str, Any]) -> str:
    """Records per task and split, plus what was rejected or dropped."""
    head = f"{'task':<18}{'train':>8}{'val':>8}{'test':>8}{'total':>8}{'rejected':>10}{'balanced':>10}{'capped':>8}"
    lines = [head, "-" * len(head)]
    for task, c in manifest["counts"].items():
        lines.append(
            f"{task:<18}{c['train']:>8}{c['val']:>8}{c['test']:>8}{sum(c.values()):>8}"
            f"{manifest['rejected'][task]:>10}{sum(manifest['balanced_out'][task].values()):>10}"
            f"{sum(manifest['capped'][task].values()):>8}"
        )
    t = manifest["totals"]
    lines.append("-" * len(head))
    lines.append(f"read {t['read']} = kept {t['kept']} + rejected {t['rejected']} + balanced out "
                 f"{t['balanced_out']} + capped {t['capped']}")
    return "\n".join(lines)

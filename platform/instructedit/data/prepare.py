"""`instructedit prepare`: the Ray Data pipeline and the manifest.

read -> validate -> tag -> split run as Ray Data stages over file chunks; the per-task step (borrow
locality, balance, cap: `pipeline.finish_task`, the same pure functions `load_records` uses) and
the parquet writes run on the driver as the records stream in. The result is
`OUT/<task>/<split>.parquet` + `OUT/manifest.json` (+ `rejects.jsonl`, `dropped.jsonl`); nothing
is dropped silently, and the manifest counts all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError, DataConfig, RunConfig, TaskConfig, load_task
from ..ray_session import init_ray
from .corpora import HOW_TO_GET_DATA, CorpusNotFoundError, resolve_data_dir, sha256_file
from .instruction_sets import resolve_pool
from .instructions import check_setting, tag
from .pipeline import SPLITS, finish_task, run_tasks, tag_and_split, task_configs
from .readers import DataError, parsed_source
from .record import SCHEMA_VERSION, EditRecord, records_to_table

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

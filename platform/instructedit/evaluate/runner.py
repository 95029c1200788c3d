"""The evaluation runner: any method of the registry (editor/methods.py) on any tasks and split.

Records go through `core.evaluate_batch` in batches of independent edits (one forward per probe
kind per batch). Every finished batch is written at once as a parquet part file under
`<out>/parts/`, so a killed evaluation resumes where it stopped: cases whose key
(case_id, task, instruction_setting) is already in a part are skipped, and the merge drops
duplicates. `<out>/cases.parquet` (one row per case, in record order) and `<out>/summary.csv`
(`<split>/<task>/<metric>` and `<split>/avg/<metric>`) are written at the end. `<out>/meta.json`
records what was evaluated; resuming into a folder written for something else is an error.

With `workers > 1` the batches are spread over Ray actors (one model copy each, a GPU each when
the target runs on CUDA); the driver still writes the part files, so resuming works the same.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import flatten, to_dict
from ..data.instructions import retag
from ..data.record import EditRecord
from ..editor import methods

KEY = ("case_id", "task", "instruction_setting")


class ResumeMismatch(ValueError):
    """The output folder holds results of a different evaluation."""


# ------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class EvalTarget:
    """What to evaluate, in a form a Ray actor can rebuild: an editor checkpoint (kind "editor";
    the method it was trained as is read from the checkpoint) or an untrained method of the
    registry (editor/methods.py) on a base model (kind = its name: pre-edit, ft-l, rome, ...)."""

    kind: str  # editor | an untrained method's name
    checkpoint: str = ""  # kind=editor: the editor.pt (or its folder)
    model: str = ""  # untrained methods: the model registry name
    hparams: dict = field(default_factory=dict)  # overrides of configs/methods/<kind>.yaml (nested)
    device: str = "cpu"

    def __post_init__(self):
        if self.kind == "editor":
            if not self.checkpoint:
                raise ValueError("an editor target needs a checkpoint")
            return
        if methods.get(self.kind).trained:
            raise ValueError(f"method {self.kind} is trained: evaluate its checkpoint (kind 'editor')")
        if not self.model:
            raise ValueError(f"baseline {self.kind} needs a model name")

    def hyperparameters(self):
        """The typed hyperparameters of an untrained method (its YAML, then `hparams`); None else."""
        return None if self.kind == "editor" else methods.get(self.kind).load_hparams(self.model, self.hparams)

    def params(self) -> dict:
        """Resolved hyperparameters as flat MLflow params: `<kind without dashes>.<field>` (ftl.steps)."""
        hp = self.hyperparameters()
        return {} if hp is None else flatten(to_dict(hp), f"{self.kind.replace('-', '')}.")

    def identity(self) -> dict:
        """What must match for a resumed evaluation to reuse earlier part files."""
        hp = self.hyperparameters()
        return {"kind": self.kind, "checkpoint": self.checkpoint, "model": self.model,
                "hparams": to_dict(hp) if hp is not None else {}}


def build(target: EvalTarget):
    """-> (editable model, make_edits) for `core.evaluate_batch`, through the method registry."""
    import torch

    torch.manual_seed(0)
    if target.kind == "editor":
        from ..editor.checkpoint import load_editor_checkpoint

        ckpt = load_editor_checkpoint(target.checkpoint)
        return methods.method_of(ckpt).load(checkpoint=ckpt, device=target.device)
    return methods.get(target.kind).load(target.model, hparams=target.hyperparameters(), device=target.device)


def checkpoint_info(path: str | Path) -> dict:
    """method, mode, tasks and instruction setting an editor checkpoint was trained with (if it says)."""
    from ..editor.checkpoint import load_editor_checkpoint

    ckpt = load_editor_checkpoint(path)
    rc = ckpt.get("run_config") or {}
    data = rc.get("data") or {}
    return {"method": methods.method_of(ckpt).name, "mode": rc.get("mode", ""),
            "tasks": ",".join(data.get("tasks") or []),
            "instruction_setting": data.get("instruction_setting", ""), "model": ckpt.get("model_name", ""),
            "experiment": rc.get("experiment", ""), "seed": str((rc.get("train") or {}).get("seed", "")),
            "step": str(ckpt.get("step", ""))}


def instruction_use(trained_with: str, asked: str | None = None) -> tuple[str, bool]:
    """(instruction setting of the *_instructed probes, edit from the instructed input) for an editor
    trained with `trained_with` ("" or "none": without instructions). An editor edits from the
    instructed input only if it was trained on it; every method's instructed probes are scored,
    with `asked`, else the editor's own setting, else the seen pool (so a multi-task MEND editor
    gets the same instructed columns as InstructEdit and the baselines)."""
    instructed_edit = (trained_with or "none") != "none"
    return asked or (trained_with if instructed_edit else "seen"), instructed_edit


def method_tags(kind: str, mode: str = "") -> dict[str, str]:
    """The `mode` and `method` tags of a target kind (an editor: of the method it was trained as)."""
    return methods.get(kind if kind != "editor" else (mode or methods.DEFAULT_TRAINED)).tags()


# ------------------------------------------------------------------------------------ storage
class CaseStore:
    """Per-case rows of one evaluation: part files while it runs, one parquet at the end."""

    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir)
        self.parts = self.root / "parts"

    def check_meta(self, meta: dict) -> None:
        p = self.root / "meta.json"
        if p.exists():
            old = json.loads(p.read_text())
            if old != meta:
                raise ResumeMismatch(f"{self.root} holds results of another evaluation ({old}); "
                                     f"use another --out or delete it (this one: {meta})")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(meta, indent=1, sort_keys=True))

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.exists() else []

    def read_parts(self) -> pd.DataFrame:
        files = self.part_files()
        if not files:
            return pd.DataFrame(columns=list(KEY))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def done_keys(self) -> set[tuple]:
        df = self.read_parts()
        return set(zip(*(df[k].astype(str) for k in KEY))) if len(df) else set()

    def write_part(self, rows: list[dict]) -> Path:
        self.parts.mkdir(parents=True, exist_ok=True)
        files = self.part_files()
        n = int(files[-1].stem.split("-")[1]) + 1 if files else 0
        path = self.parts / f"part-{n:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: a kill leaves a whole part or none
        return path

    def merge(self) -> pd.DataFrame:
        df = self.read_parts()
        if len(df):
            df = df.drop_duplicates(list(KEY), keep="first")
            if "order" in df.columns:
                df = df.sort_values("order", kind="stable")
            df = df.reset_index(drop=True)
        df.to_parquet(self.root / "cases.parquet", index=False)
        return df


# ------------------------------------------------------------------------------------ summary
def summarize(rows: pd.DataFrame | list[dict], split: str = "test", seed: int = 0) -> tuple[dict, dict[str, float]]:
    """Per-case rows -> ({task: {metric: {mean, ci_low, ci_high, n}}}, flat tracked metrics).

    Flat keys: `<split>/<task>/<metric>` (mean over cases; task `avg` = macro average over tasks)
    plus `_ci_low`, `_ci_high` (seeded 95% bootstrap over cases) and `_n`."""
    from .metrics import flat_metrics, task_summary

    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    summary = task_summary(records, seed)
    return summary, flat_metrics(summary, split)


def summary_metrics(rows: pd.DataFrame | list[dict], split: str = "test") -> dict[str, float]:
    """Only the means of `summarize`: `<split>/<task>/<metric>` and `<split>/avg/<metric>`."""
    from .metrics import CI_SUFFIXES

    return {k: v for k, v in summarize(rows, split)[1].items() if not k.endswith(CI_SUFFIXES)}


def _atomic_write(path: Path, write) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)  # a kill leaves the old file or the new one, never half of one
    return path


def write_summary(metrics: dict[str, float], path: str | Path) -> Path:
    """Flat metrics -> CSV rows (key, split, task, metric, value, ci_low, ci_high, n)."""
    from .metrics import CI_SUFFIXES

    rows = []
    for k, v in sorted(metrics.items()):
        if k.endswith(CI_SUFFIXES):
            continue
        split, task, metric = k.split("/", 2)
        rows.append({"key": k, "split": split, "task": task, "metric": metric, "value": v,
                     "ci_low": metrics.get(k + "_ci_low"), "ci_high": metrics.get(k + "_ci_high"),
                     "n": metrics.get(k + "_n")})
    cols = ["key", "split", "task", "metric", "value", "ci_low", "ci_high", "n"]
    return _atomic_write(Path(path), lambda t: pd.DataFrame(rows, columns=cols).to_csv(t, index=False))


def write_summary_json(summary: dict, path: str | Path) -> Path:
    return _atomic_write(Path(path), lambda t: t.write_text(json.dumps(summary, indent=1, sort_keys=False)))


# ------------------------------------------------------------------------------------ running
@dataclass
class EvalResult:
    cases: pd.DataFrame
    metrics: dict[str, float]  # flat: means plus _ci_low / _ci_high / _n
    out_dir: Path
    n_new: int  # cases evaluated by this call (the rest came from earlier part files)
    seconds: float

    @property
    def cases_path(self) -> Path:
        return self.out_dir / "cases.parquet"

    summary: dict = field(default_factory=dict)  # {task: {metric: {mean, ci_low, ci_high, n}}}

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.csv"

    @property
    def summary_json_path(self) -> Path:
        return self.out_dir / "summary.json"


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate_rows(editor, make_edits, records: list[EditRecord], setting: str, max_length: int,
                  orders: list[int], extra: dict | None = None, options=None) -> list[dict]:
    """One batch of independent edits -> per-case rows (key columns, order, every metric, and
    `edit_seconds`: the wall time of computing the batch's edits over its size, what a method
    costs per edit; the forwards that score the edit are not counted)."""
    from .core import evaluate_batch

    spent = 0.0

    def timed(batch, hidden):
        nonlocal spent
        t = time.perf_counter()
        edits = make_edits(batch, hidden)
        spent += time.perf_counter() - t
        return edits

    rows = evaluate_batch(editor, records, timed, max_length, options)
    for r, o in zip(rows, orders):
        r["instruction_setting"] = setting
        r["order"] = o
        r["edit_seconds"] = spent / len(records)
        r.update(extra or {})
    return rows


def run_evaluation(
    records: list[EditRecord],
    out_dir: str | Path,
    *,
    target: EvalTarget | None = None,
    editor=None,
    make_edits: Callable | None = None,
    setting: str = "none",
    split: str = "test",
    batch_size: int = 16,
    max_length: int = 128,
    workers: int = 1,
    retag_records: bool = True,
    seed: int = 0,
    instruction_set: str = "",
    progress: bool = True,
    on_batch: Callable[[int, list[dict]], None] | None = None,
    options=None,
) -> EvalResult:
    """Evaluate every record as an independent edit; resumable (see the module docstring).

    Give either `target` (built here, or in each Ray actor when workers > 1) or an in-process
    `editor` with its `make_edits`. `on_batch(i, rows)` runs after each part file is written.
    `options` (core.EvalOptions): whether the edit input is instructed, instructed probes,
    generation; part of the resume identity.
    """
    from .core import EvalOptions

    options = options or EvalOptions()
    if target is None and (editor is None or make_edits is None):
        raise ValueError("give an EvalTarget or an editor with make_edits")
    if workers > 1 and target is None:
        raise ValueError("parallel evaluation needs an EvalTarget (actors rebuild it)")
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    t0 = time.time()
    if retag_records:
        records = retag(records, setting, seed, instruction_set)
    store = CaseStore(out_dir)
    store.check_meta({"split": split, "instruction_setting": setting, "max_length": max_length,
                      "seed": seed, "instruction_set": instruction_set,
                      "target": target.identity() if target else "in-process",
                      "options": dataclasses.asdict(options)})
    done = store.done_keys()
    todo: list[tuple[int, EditRecord]] = []
    seen: set[tuple] = set()
    for i, r in enumerate(records):
        key = (str(r.case_id), str(r.task), setting)
        if key in seen:
            say(f"[eval] note: duplicate case {key[:2]} skipped")
            continue
        seen.add(key)
        if key not in done:
            todo.append((i, r))
    say(f"[eval] {len(seen)} cases, {len(seen) - len(todo)} already done in {store.root}, "
        f"{len(todo)} to evaluate in batches of {batch_size}" + (f" over {workers} actors" if workers > 1 else ""))
    batches = _batches(todo, batch_size)
    extra = {"split": split}

    def report(i: int, rows: list[dict], n_done: int, t_start: float) -> None:
        store.write_part(rows)
        el = time.time() - t_start
        rate = n_done / el if el > 0 else 0.0
        eta = (len(todo) - n_done) / rate if rate > 0 else float("nan")
        say(f"[eval] batch {i + 1}/{len(batches)}: {n_done}/{len(todo)} cases, {rate:.2f} cases/s, ETA {eta:.0f}s")
        if on_batch:
            on_batch(i, rows)

    t_start = time.time()
    n_done = 0
    if batches and workers > 1:
        for i, rows in enumerate(_run_parallel(target, batches, setting, max_length, workers, extra, options)):
            n_done += len(rows)
            report(i, rows, n_done, t_start)
    elif batches:
        if editor is None:
            editor, make_edits = build(target)
        for i, batch in enumerate(batches):
            rows = evaluate_rows(editor, make_edits, [r for _, r in batch], setting, max_length,
                                 [o for o, _ in batch], extra, options)
            n_done += len(rows)
            report(i, rows, n_done, t_start)
    cases = store.merge()
    summary, metrics = summarize(cases, split)
    write_summary(metrics, store.root / "summary.csv")
    write_summary_json(summary, store.root / "summary.json")
    say(f"[eval] done: {len(cases)} cases in {time.time() - t0:.1f}s -> {store.root / 'cases.parquet'}")
    return EvalResult(cases, metrics, store.root, n_done, time.time() - t0, summary)


def _run_parallel(target: EvalTarget, batches: list, setting: str, max_length: int, workers: int,
                  extra: dict, options) -> Iterable[list[dict]]:
    """Batches over Ray actors, each holding one model; yields rows as batches finish."""
    import ray
    from ray.util import ActorPool

    from ..ray_session import init_ray

    init_ray()
    gpu = target.device.startswith("cuda")

    @ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)
    class Evaluator:
        def __init__(self, target: EvalTarget):
            self.editor, self.make = build(target)

        def run(self, batch):
            return evaluate_rows(self.editor, self.make, [r for _, r in batch], setting, max_length,
                                 [o for o, _ in batch], extra, options)

    n = min(workers, len(batches))
    pool = ActorPool([Evaluator.remote(target) for _ in range(n)])
    yield from pool.map_unordered(lambda a, b: a.run.remote(b), batches)


# ------------------------------------------------------------------------------------ tracking
def log_results(result: EvalResult, split: str, *, run_id: str | None = None, experiment: str = "instructedit",
                tags: dict[str, str] | None = None, params: dict | None = None, tracking_uri: str | None = None,
                run_name: str | None = None) -> str:
    """Metrics, per-case parquet and summary CSV to `run_id` (an editor's run) or a new eval run."""
    from .. import tracking

    def log(rid: str) -> None:
        tracking.log_metrics(result.metrics, run_id=rid)
        if tags:
            tracking.set_tags(tags, run_id=rid)
        tracking.log_artifact(result.cases_path, f"eval/{split}", run_id=rid)
        tracking.log_artifact(result.summary_path, f"eval/{split}", run_id=rid)
        if result.summary_json_path.exists():
            tracking.log_artifact(result.summary_json_path, f"eval/{split}", run_id=rid)
        seq = result.out_dir / "sequential.csv"
        if seq.exists():
            tracking.log_artifact(seq, f"eval/{split}", run_id=rid)

    if run_id:
        tracking.configure(tracking_uri)
        log(run_id)
        return run_id
    with tracking.run(experiment, run_name, params=params, tags={"kind": "eval", **(tags or {})},
                      tracking_uri=tracking_uri) as rid:
        log(rid)
    return rid

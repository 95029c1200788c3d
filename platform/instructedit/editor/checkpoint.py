"""Editor checkpoints on disk: the layout, safe loading, and the one resolver every command uses.

Layout of a training run folder (Ray Train's storage, `train.storage_path/<run>/`):

    <run>/step-000020/editor.pt   the editor's own weights + configs + base-model fingerprint + the
                                  step and its val metrics (never the base model)
    <run>/step-000020/state.pt    editor + Adam + early-stopping state (what a restarted worker resumes)
    <run>/best.json               {step, metric, value, path}: the best checkpoint by validation,
                                  rewritten (temp file + rename) whenever training saves a new best

`resolve()` turns what a user types into one editor.pt: a file, a step folder, a folder holding
editor.pt (a downloaded MLflow `checkpoint` artifact), a run folder (its best checkpoint: best.json,
or for run folders written before best.json the val metrics stored in each checkpoint), or an
MLflow run id (through a downloader the caller passes: this module never imports mlflow).

Loading never runs code from the file: torch.load(weights_only=True) admits tensors and plain
containers only (plus numpy scalars, which older checkpoints carry in their val metrics). Every
problem is a CheckpointError whose message is one line naming the file and what is wrong.
torch is imported only where a file is read, so the CLI can import CheckpointError cheaply.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EDITOR_FILE = "editor.pt"
STATE_FILE = "state.pt"
BEST_FILE = "best.json"
FORMAT = "instructedit-editor/1"
DEFAULT_METRIC = "val/score"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_STEP_DIR = re.compile(r"step-(\d+)$")
_REQUIRED = ("editor_config", "model_config", "model_name", "edited_weights", "fingerprint", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, truncated, unsafe or not an editor's: one line."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No such checkpoint (still a FileNotFoundError for callers that catch that)."""


# ------------------------------------------------------------------------------------- layout
def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(path: str | os.PathLike) -> int | None:
    m = _STEP_DIR.search(str(path).rstrip("/"))
    return int(m.group(1)) if m else None


def list_step_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The step-XXXXXX folders holding an editor.pt under a run folder, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    dirs = [d for d in run_dir.iterdir() if d.is_dir() and step_of(d) is not None and (d / EDITOR_FILE).exists()]
    return sorted(dirs, key=lambda d: step_of(d))


# ------------------------------------------------------------------------------------ loading
def _numpy_scalar_globals() -> list:
    # Val metrics computed with numpy pickle as numpy scalars; rebuilding one from its dtype and
    # bytes runs no user code, so these few constructors are allowed on top of torch's defaults.
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's wheels
        return []
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray.scalar, np.dtype]
    out += [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    return out


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load with weights_only=True; any failure -> CheckpointError naming the file."""
    import pickle

    import torch

    p = Path(path)
    if not p.exists():
        raise CheckpointNotFound(f"{p}: {what} not found")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, expected a {what} file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file (an interrupted save?)")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if m:
            raise CheckpointError(f"{p}: refused to load: it asks to build {m.group(1)}, which no instructedit "
                                  f"{what} holds (a foreign or tampered file; nothing from it was run)") from None
        why = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
        raise CheckpointError(f"{p}: truncated or not a torch file "
                              f"({why.group(1).strip() if why else _first_line(e)})") from None
    except PermissionError as e:
        raise CheckpointError(f"{p}: cannot read: {e.strerror or e}") from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p}: truncated or not a torch file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def check_editor_checkpoint(ckpt: Any, path: str | os.PathLike) -> dict:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an instructedit editor checkpoint (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: editor checkpoint lacks {', '.join(missing)}")
    return ckpt


def load_editor_checkpoint(path: str | os.PathLike) -> dict:
    """An editor.pt (or a folder holding one) -> its checked dict."""
    p = Path(path)
    if p.is_dir():
        p = p / EDITOR_FILE
    return check_editor_checkpoint(safe_load(p, "editor checkpoint"), p)


def load_resume_state(ckpt_dir: str | os.PathLike) -> dict:
    """state.pt of a checkpoint folder -> the `resume` dict of train_editor."""
    p = Path(ckpt_dir) / STATE_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: not a training checkpoint (editor.pt alone cannot resume)")
    state = safe_load(p, "training state")
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{p}: not an instructedit training state (no step)")
    return state


# ------------------------------------------------------------------------------- best pointer
def write_best(run_dir: str | os.PathLike, step: int, metric: str, value: float,
               path: str | os.PathLike | None = None) -> Path:
    """<run_dir>/best.json -> the best checkpoint; written to a temp file and renamed, so a reader
    sees the old pointer or the new one, never half of one. `path` is stored relative to run_dir."""
    run_dir = Path(run_dir)
    rel = Path(path) if path is not None else Path(step_dir_name(step)) / EDITOR_FILE
    if rel.is_absolute():
        try:
            rel = rel.relative_to(run_dir)
        except ValueError:
            pass
    doc = {"step": int(step), "metric": metric, "value": float(value), "path": str(rel)}
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{BEST_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.write("\n")
        os.replace(tmp, run_dir / BEST_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return run_dir / BEST_FILE


def read_best(run_dir: str | os.PathLike) -> dict | None:
    """best.json of a run folder (checked), or None if there is none."""
    p = Path(run_dir) / BEST_FILE
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p}: not a valid best pointer ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not isinstance(doc.get("step"), int):
        raise CheckpointError(f"{p}: not a valid best pointer (needs step and path)")
    return doc


# ------------------------------------------------------------------------------------ resolve
@dataclass
class Resolved:
    """One editor checkpoint, found and read: what it is, why it was chosen, its contents."""

    path: Path
    ckpt: dict = field(repr=False)
    chosen: str  # file | folder | best.json | val metrics | mlflow
    run_id: str = ""
    metric: str = DEFAULT_METRIC

    @property
    def step(self) -> int | None:
        s = self.ckpt.get("step")
        return int(s) if isinstance(s, (int, float)) else step_of(self.path.parent)

    @property
    def value(self) -> float | None:
        v = (self.ckpt.get("val") or {}).get(self.metric)
        return None if v is None else float(v)

    def line(self) -> str:
        """`best: step 20, val/score 0.762 (path)` for a selected checkpoint, `editor: ...` for one given."""
        head = "best" if self.chosen in ("best.json", "val metrics", "mlflow") else "editor"
        step = f"step {self.step}" if self.step is not None else "step ?"
        val = f", {self.metric} {self.value:.3f}" if self.value is not None else ""
        run = f", MLflow run {self.run_id}" if self.run_id else ""
        return f"{head}: {step}{val} ({self.path}{run})"


def _metric_of(ckpt: dict) -> str:
    rc = ckpt.get("run_config") or {}
    return str((rc.get("train") or {}).get("early_stop_metric") or DEFAULT_METRIC)


def _best_by_val(run_dir: Path, steps: list[Path]) -> Resolved:
    """Run folders written before best.json: the step whose stored val metric is highest (the
    earliest on ties, as training keeps the first best)."""
    best: Resolved | None = None
    for d in steps:
        f = d / EDITOR_FILE
        ckpt = load_editor_checkpoint(f)
        r = Resolved(f, ckpt, "val metrics", metric=_metric_of(ckpt))
        v = r.value
        if v is None or math.isnan(v):
            continue
        if best is None or v > best.value:
            best = r
    if best is None:
        raise CheckpointError(
            f"{run_dir}: {len(steps)} checkpoint(s) ({', '.join(d.name for d in steps)}) but no {BEST_FILE} and no "
            "val metrics stored in them to pick the best by: pass a step folder, e.g. "
            f"{steps[-1]}")
    return best


def resolve(spec: str | os.PathLike, download: Callable[[str], Path] | None = None) -> Resolved:
    """A file, a step folder, a run folder (its best checkpoint) or an MLflow run id -> Resolved.

    download(run_id) -> a local folder holding the run's `checkpoint` artifact; without it a run
    id is not accepted."""
    p = Path(spec).expanduser()
    if p.is_file():
        ckpt = load_editor_checkpoint(p)
        return Resolved(p, ckpt, "file", metric=_metric_of(ckpt))
    if p.is_dir():
        if (p / EDITOR_FILE).exists():
            f = p / EDITOR_FILE
            ckpt = load_editor_checkpoint(f)
            return Resolved(f, ckpt, "folder", metric=_metric_of(ckpt))
        pointer = read_best(p)
        if pointer is not None:
            f = p / pointer["path"]
            if not f.exists():
                # Ray may have dropped it (ties at the keep limit): choose among what is kept.
                steps = list_step_checkpoints(p)
                if not steps:
                    raise CheckpointNotFound(f"{p / BEST_FILE}: points to {f}, which does not exist, and no "
                                             "step-* checkpoint is left")
                return _best_by_val(p, steps)
            ckpt = load_editor_checkpoint(f)
            return Resolved(f, ckpt, "best.json", metric=str(pointer.get("metric") or _metric_of(ckpt)))
        steps = list_step_checkpoints(p)
        if steps:
            return _best_by_val(p, steps)
        raise CheckpointNotFound(f"{p}: no {EDITOR_FILE}, no {BEST_FILE} and no step-* checkpoints in this folder")
    s = str(spec)
    if RUN_ID.match(s):
        if download is None:
            raise CheckpointError(f"{s}: looks like an MLflow run id, but no tracking store was given to fetch it from")
        folder = Path(download(s))
        r = resolve(folder)
        return Resolved(r.path, r.ckpt, "mlflow", run_id=s, metric=r.metric)
    raise CheckpointNotFound(f"{s}: not found: no such file or folder, and not an MLflow run id (give an "
                             f"{EDITOR_FILE}, a step folder, a training run folder or a run id)")


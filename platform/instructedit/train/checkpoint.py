"""Editor-only checkpoints as Ray Train persists them.

One validation = one checkpoint directory `step-XXXXXX/` with
  editor.pt  the editor's own weights + configs + base-model fingerprint (MendEditor.save; never
             the base model) - what `evaluate`, `edit` and MLflow's `checkpoint/` artifact use;
  state.pt   editor + Adam state + step counter + early-stopping state - what a restarted worker
             resumes from (train_editor(resume=...)).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

EDITOR_FILE = "editor.pt"
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(path: str | Path) -> int | None:
    m = _STEP_DIR.search(str(path).rstrip("/"))
    return int(m.group(1)) if m else None


def load_resume_state(ckpt_dir: str | Path) -> dict:
    """state.pt of a checkpoint directory -> the `resume` dict of train_editor."""
    p = Path(ckpt_dir) / STATE_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: not a training checkpoint (editor.pt alone cannot resume)")
    return torch.load(p, map_location="cpu", weights_only=False)


def editor_file(ckpt_dir: str | Path) -> Path:
    p = Path(ckpt_dir) / EDITOR_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} not found")
    return p


def list_step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The step-XXXXXX checkpoint directories Ray Train kept under a run's storage folder, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    dirs = [d for d in run_dir.iterdir() if d.is_dir() and step_of(d) is not None and (d / EDITOR_FILE).exists()]
    return sorted(dirs, key=lambda d: step_of(d))

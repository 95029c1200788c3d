"""What training writes at each validation (the layout itself is editor/checkpoint.py's).

One validation = one folder `step-XXXXXX/` with editor.pt (the editor alone, with its method name,
the step, its val metrics and the run config) and state.pt (editor + Adam + early-stopping state, what a restarted
worker resumes from); a new best also rewrites the run folder's best.json pointer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..editor.checkpoint import (
    BEST_FILE,
    EDITOR_FILE,
    STATE_FILE,
    list_step_checkpoints,
    load_resume_state,
    step_dir_name,
    step_of,
    write_best,
)

__all__ = ["BEST_FILE", "EDITOR_FILE", "STATE_FILE", "list_step_checkpoints", "load_resume_state", "plain_metrics",
           "save_step", "step_dir_name", "step_of", "write_best"]


def plain_metrics(val: dict) -> dict[str, float]:
    """Metric values as Python floats: numpy scalars would need extra globals to load safely."""
    return {str(k): float(v) for k, v in val.items()}


def save_step(out_dir: str | os.PathLike, step: int, editor, state: dict, val: dict, run_config: dict) -> Path:
    """step-XXXXXX/{editor.pt, state.pt} under out_dir; each file is written whole then renamed."""
    d = Path(out_dir) / step_dir_name(step)
    # The method name travels with the editor so evaluation and the edit API need no run config to
    # pick its loader (editor/methods.method_of; older checkpoints fall back on run_config.mode).
    extra = {"method": run_config.get("mode", ""), "step": step, "val": plain_metrics(val), "run_config": run_config}
    editor.save(d / EDITOR_FILE, extra=extra)
    state = {**state, "step": step}
    if "best" in state:
        state["best"] = float(state["best"])
    if "best_metrics" in state:
        state["best_metrics"] = plain_metrics(state["best_metrics"])
    tmp = d / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(d / STATE_FILE)
    return d

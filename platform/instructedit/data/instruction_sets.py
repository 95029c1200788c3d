"""Named, versioned instruction sets (written by the optimiser; selected with data.instruction_set).

Here in data/ rather than instructions/: every consumer of a pool (preparation, evaluation, the
edit API) sits at or above data/, while the optimiser that writes sets sits above it.

A set is a YAML file `<INSTRUCTEDIT_INSTRUCTION_SETS or ./instruction_sets>/<name>.yaml`:
{name, version, created, source, tasks: {task: [{id, text, unseen, score}]}}. Tasks a set does
not cover keep the pool of their task YAML.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..config import ConfigError, Instruction, TaskConfig


def sets_dir() -> Path:
    return Path(os.environ.get("INSTRUCTEDIT_INSTRUCTION_SETS", Path.cwd() / "instruction_sets"))


def set_path(name: str) -> Path:
    return sets_dir() / f"{name}.yaml"


def load_set(name: str) -> dict:
    p = set_path(name)
    if not p.exists():
        known = sorted(q.stem for q in sets_dir().glob("*.yaml")) if sets_dir().exists() else []
        raise ConfigError(f"instruction set {name!r} not found at {p}; known: {known}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ConfigError(f"{p}: an instruction set needs a 'tasks' mapping")
    return data


def resolve_pool(task: TaskConfig, set_name: str = "") -> tuple[Instruction, ...]:
    """The instructions a task uses: its YAML pool, or the named set's instructions for it."""
    if not set_name:
        return task.instructions
    data = load_set(set_name)
    items = data["tasks"].get(task.name)
    if not items:
        return task.instructions
    pool = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("text") or not item.get("id"):
            raise ConfigError(f"{set_path(set_name)}: tasks.{task.name}[{i}] needs 'id' and 'text'")
        pool.append(Instruction(id=str(item["id"]), text=str(item["text"]), unseen=bool(item.get("unseen", False))))
    return tuple(pool)


def save_set(name: str, tasks: dict[str, list[dict]], **meta) -> Path:
    """Write atomically (temp file + rename) so a failed run never leaves half a set."""
    p = set_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump({"name": name, **meta, "tasks": tasks}, sort_keys=False, allow_unicode=True))
    os.replace(tmp, p)
    return p

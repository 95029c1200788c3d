"""Instruction tagging: pure and seeded.

The setting says which instruction an edit record carries:
  none          no instruction; the editor sees the plain prompt (the multi-task MEND baseline)
  seen          a seeded choice from the task's training pool (instructions not marked unseen)
  unseen        a seeded choice from the instructions kept out of training
  id:<id>       one fixed instruction of the pool

The choice depends only on (seed, case_id) and the pool, so adding records to a corpus never
changes the tags of the others. The instruction goes on the edit prompt (and, at test time, on
rephrase and portability prompts through `apply_template`), never on locality prompts.

Two choosers, one per caller: `tag`/`retag` for corpus records (preparation, `load_records` of a
prepared folder, evaluation under another setting), and `request_instruction` for a single edit
request of the edit API, which follows the checkpoint's setting but never samples unseen
instructions (see its docstring).
"""

from __future__ import annotations

import dataclasses
import functools

from .. import config
from ..config import INSTRUCTION_SETTINGS, ConfigError, Instruction, TaskConfig, load_task
from .instruction_sets import resolve_pool
from .readers import stable_int
from .record import EditRecord


def task_config(name: str) -> TaskConfig:
    """`load_task`, parsed once per version of the YAML file: probe builders ask for the task of
    every record, and parsing the YAML each time was most of their cost."""
    path = config.CONFIG_DIR / "tasks" / f"{name}.yaml"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return load_task(name)  # its error names the known tasks
    return _task_config(name, str(path), mtime)


@functools.lru_cache(maxsize=256)
def _task_config(name: str, path: str, mtime_ns: int) -> TaskConfig:
    # path and mtime are part of the key only: a moved registry or an edited file is parsed anew.
    return load_task(name)


def apply_template(task_cfg: TaskConfig, instruction_text: str, prompt: str) -> str:
    """The task template with its slots filled; no instruction -> the plain prompt.

    Slots are replaced literally (not str.format), so braces inside prompts are safe.
    """
    if not instruction_text:
        return prompt
    return (
        task_cfg.template.replace("{task}", task_cfg.display_name or task_cfg.name)
        .replace("{instruction}", instruction_text)
        .replace("{prompt}", prompt)
    )


def fill_slots(text: str, record: EditRecord) -> str:
    """[LABEL] -> the ConvSent target label, [TOPIC] -> the topic (or, elsewhere, the subject)."""
    if "[" not in text:
        return text
    label = record.sentiment.label if record.sentiment else ""
    topic = record.sentiment.topic if record.sentiment else record.subject
    return text.replace("[LABEL]", label).replace("[TOPIC]", topic)


def check_setting(setting: str) -> None:
    if setting not in INSTRUCTION_SETTINGS and not setting.startswith("id:"):
        raise ConfigError(f"instruction setting must be none|seen|unseen|id:<instruction id>, got {setting!r}")


def choose_instruction(task_cfg: TaskConfig, setting: str, seed: int, case_id: str,
                       pool: tuple[Instruction, ...] | None = None) -> Instruction | None:
    """The instruction a record gets under `setting` (None for `none`)."""
    check_setting(setting)
    pool = task_cfg.instructions if pool is None else tuple(pool)
    if setting == "none":
        return None
    if setting.startswith("id:"):
        want = setting[3:]
        for ins in pool:
            if ins.id == want:
                return ins
        raise ConfigError(f"task {task_cfg.name!r} (configs/tasks/{task_cfg.name}.yaml): unknown instruction id "
                          f"{want!r}; known: {[i.id for i in pool]}")
    candidates = [i for i in pool if i.unseen == (setting == "unseen")]
    if not candidates:
        raise ConfigError(f"task {task_cfg.name!r}: no {setting} instructions in its pool")
    return candidates[stable_int(seed, case_id, "instruction") % len(candidates)]


def with_instruction(record: EditRecord, task_cfg: TaskConfig, instruction_id: str, text: str) -> EditRecord:
    """A copy of `record` carrying the instruction `text` (slots filled) and its edit input; an
    empty `text` gives the plain prompt."""
    text = fill_slots(text, record)
    return dataclasses.replace(record, instruction_id=instruction_id, instruction=text,
                               edit_input=apply_template(task_cfg, text, record.prompt))


def tag(record: EditRecord, task_cfg: TaskConfig, setting: str, seed: int,
        pool: tuple[Instruction, ...] | None = None) -> EditRecord:
    """A copy of `record` with instruction_id, instruction and edit_input set for `setting`."""
    ins = choose_instruction(task_cfg, setting, seed, record.case_id, pool)
    return with_instruction(record, task_cfg, ins.id if ins else "", ins.text if ins else "")


def retag(records: list[EditRecord], setting: str, seed: int = 0, instruction_set: str = "") -> list[EditRecord]:
    """Records tagged anew for `setting` (none | seen | unseen | id:<id>), each from the pool of its
    own task (or of the named instruction set); the same tags preparation would have given."""
    check_setting(setting)
    pools: dict[str, tuple[Instruction, ...]] = {}
    out = []
    for r in records:
        cfg = task_config(r.task)
        if r.task not in pools:
            pools[r.task] = resolve_pool(cfg, instruction_set)
        out.append(tag(r, cfg, setting, seed, pools[r.task]))
    return out


def request_instruction(task_cfg: TaskConfig, setting: str, key: str, instruction_set: str = "",
                        seed: int | None = None) -> tuple[Instruction | None, str]:
    """The instruction of one edit request to an editor trained under `setting`; plus a note.

    `none` gives no instruction. `id:<id>` gives that instruction while the pool has it. Anything
    else gives a seen instruction: the pool's first, or with `seed` a seeded choice per request
    `key`; a request is a deployment, so it never gets an instruction held out of training. A named
    instruction set that cannot be read falls back to the task's own pool (the note says so): the
    set file may live only where the editor was trained.
    """
    if setting == "none":
        return None, "editor trained without instructions: the task adds none"
    pool, note = task_cfg.instructions, ""
    if instruction_set:
        try:
            pool = resolve_pool(task_cfg, instruction_set)
        except (ConfigError, OSError) as e:
            note = f"instruction set {instruction_set!r} unavailable ({e}); used the task pool"
    if setting.startswith("id:") and any(i.id == setting[3:] for i in pool):
        return choose_instruction(task_cfg, setting, 0, key, pool), note
    seen = [i for i in pool if not i.unseen]
    if not seen:
        raise ConfigError(f"task {task_cfg.name!r} has no seen instructions")
    if seed is None:
        return seen[0], note
    return choose_instruction(task_cfg, "seen", seed, key, pool), note

"""Instruction tagging: pure and seeded.

The setting says which instruction an edit record carries:
  none          no instruction; the editor sees the plain prompt (the multi-task MEND baseline)
  seen          a seeded choice from the task's training pool (instructions not marked unseen)
  unseen        a seeded choice from the instructions kept out of training
  id:<id>       one fixed instruction of the pool

The choice depends only on (seed, case_id) and the pool, so adding records to a corpus never
changes the tags of the others. The instruction goes on the edit prompt (and, at test time, on
rephrase and portability prompts through `apply_template`), never on locality prompts.
"""

from __future__ import annotations

import dataclasses

from ..config import INSTRUCTION_SETTINGS, ConfigError, Instruction, TaskConfig
from .readers import stable_int
from .record import EditRecord


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


def tag(record: EditRecord, task_cfg: TaskConfig, setting: str, seed: int,
        pool: tuple[Instruction, ...] | None = None) -> EditRecord:
    """A copy of `record` with instruction_id, instruction and edit_input set for `setting`."""
    ins = choose_instruction(task_cfg, setting, seed, record.case_id, pool)
    if ins is None:
        return dataclasses.replace(record, instruction_id="", instruction="", edit_input=record.prompt)
    text = fill_slots(ins.text, record)
    return dataclasses.replace(
        record, instruction_id=ins.id, instruction=text, edit_input=apply_template(task_cfg, text, record.prompt)
    )

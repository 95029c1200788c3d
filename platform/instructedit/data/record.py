"""EditRecord: one row per edit, the unit every stage passes on (see DESIGN.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1


@dataclass
class Probe:
    """A prompt with its expected answer(s). Alias lists: any alias counts as correct."""

    kind: str
    prompt: str
    answer: list[str]


@dataclass
class Sentiment:
    """ConvSent: the topic, the target label and the sentences of each polarity about the topic."""

    topic: str
    label: str  # positive | negative
    good: list[str]  # sentences of the target label
    bad: list[str]  # sentences of the other label


@dataclass
class EditRecord:
    task: str
    case_id: str
    prompt: str
    target_new: str
    split: str = ""
    subject: str = ""
    ground_truth: list[str] = field(default_factory=list)
    rephrase_prompts: list[str] = field(default_factory=list)
    locality: list[Probe] = field(default_factory=list)
    portability: list[Probe] = field(default_factory=list)
    sentiment: Sentiment | None = None
    instruction_id: str = ""
    instruction: str = ""
    edit_input: str = ""  # the prompt as the editor sees it (instruction template applied)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EditRecord:
        row = dict(row)
        row["locality"] = [Probe(**p) for p in (row.get("locality") or [])]
        row["portability"] = [Probe(**p) for p in (row.get("portability") or [])]
        s = row.get("sentiment")
        row["sentiment"] = Sentiment(**s) if s else None
        for k in ("ground_truth", "rephrase_prompts"):
            row[k] = list(row.get(k) or [])
        for p in row["locality"] + row["portability"]:
            p.answer = list(p.answer)
        if row["sentiment"]:
            row["sentiment"].good = list(row["sentiment"].good)
            row["sentiment"].bad = list(row["sentiment"].bad)
        return cls(**row)


_PROBE = pa.struct([("kind", pa.string()), ("prompt", pa.string()), ("answer", pa.list_(pa.string()))])
ARROW_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("case_id", pa.string()),
        ("prompt", pa.string()),
        ("target_new", pa.string()),
        ("split", pa.string()),
        ("subject", pa.string()),
        ("ground_truth", pa.list_(pa.string())),
        ("rephrase_prompts", pa.list_(pa.string())),
        ("locality", pa.list_(_PROBE)),
        ("portability", pa.list_(_PROBE)),
        (
            "sentiment",
            pa.struct(
                [
                    ("topic", pa.string()),
                    ("label", pa.string()),
                    ("good", pa.list_(pa.string())),
                    ("bad", pa.list_(pa.string())),
                ]
            ),
        ),
        ("instruction_id", pa.string()),
        ("instruction", pa.string()),
        ("edit_input", pa.string()),
    ]
)


# The fields an instruction setting fills in: left out where records are compared across settings.
INSTRUCTION_FIELDS = ("instruction_id", "instruction", "edit_input")


def digest_records(h, records, *, instructions: bool = True) -> None:
    """Feed `records` to the hash `h` (a hashlib object) in (task, case_id) order, one JSON row each.
    instructions=False leaves out the instruction fields, so one test set under two instruction
    settings digests alike (the setting is a tag of its own)."""
    for r in sorted(records, key=lambda r: (r.task, r.case_id)):
        row = r.to_row()
        if not instructions:
            row = {k: v for k, v in row.items() if k not in INSTRUCTION_FIELDS}
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())


def records_to_table(records: list[EditRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in records], schema=ARROW_SCHEMA)


def table_to_records(table: pa.Table) -> list[EditRecord]:
    return [EditRecord.from_row(r) for r in table.to_pylist()]

"""Corpus readers: one per source format, each turning a raw JSON record into an `EditRecord`.

Formats (see ../shared/data/README.md):
  knowedit   KnowEdit CounterFact / Recent / ZsRE: subject, prompt, target_new, ground_truth?,
             rephrase_prompt?, portability{Kind: [{prompt, ground_truth}]}, locality{Kind: [...]}
  mend       ROME CounterFact in the MEND format: prompt, subject, target_new, ground_truth,
             rephrase_prompt, locality_prompt, locality_ground_truth
  zsre_mend  MEND's ZsRE split: subject, src, alt, answers[], rephrase, loc, loc_ans
  convsent   BlenderBot sentiment (SERAC): ent, pos[], neg[]; one edit record per topic

Every problem raises `DataError` naming the file, the record index and the field. Answers come as a
string, a list or a list of alias lists; `normalize_answer` turns all of them into one flat alias
list. The case id is `<task>/<file stem>/<content hash>`: it does not depend on the record's
position, so adding records to a file never renames the others.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .record import EditRecord, Probe, Sentiment

# The question a ConvSent edit (and its other-topic locality probes) asks about a topic.
CONVSENT_PROMPT = "What is your opinion of {topic}?"
LABELS = ("positive", "negative")

# Portability kinds found in KnowEdit files, normalised; anything else keeps its snake-cased name.
_KIND_ALIASES = {
    "reasoning": "reasoning",
    "one_hop": "reasoning",
    "subject_aliasing": "subject_aliasing",
    "alias": "subject_aliasing",
    "logical_generalization": "logical_generalization",
    "logical_generalisation": "logical_generalization",
    "relation_specificity": "relation_specificity",
    "forgetfulness": "forgetfulness",
}


class DataError(ValueError):
    """A corpus problem. The message names the file, the record index and the field."""

    def __init__(self, file: str, index: int | None, field: str | None, reason: str):
        self.file = str(file)
        self.index = index
        self.field = field
        self.reason = reason
        where = self.file
        if index is not None:
            where += f": record {index}"
        if field:
            where += f": field {field!r}"
        super().__init__(f"{where}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index, "field": self.field, "reason": self.reason}


# ------------------------------------------------------------------------------------- hashing
def stable_int(*parts: Any) -> int:
    """A 64-bit hash of the parts that is the same in every process and on every machine."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def stable_unit(*parts: Any) -> float:
    """stable_int mapped to [0, 1)."""
    return stable_int(*parts) / 2.0**64


def content_hash(raw: Any) -> str:
    text = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def normalize_kind(kind: str) -> str:
    k = re.sub(r"[^a-z0-9]+", "_", str(kind).lower()).strip("_")
    return _KIND_ALIASES.get(k, k)


# ------------------------------------------------------------------------------------ answers
def normalize_answer(value: Any, file: str, index: int | None, field: str, *, required: bool = True) -> list[str]:
    """str | list[str] | list[list[str]] (alias lists) -> flat, de-duplicated list[str].

    A string is one answer (never indexed into). Lists may nest: every string anywhere in them is an
    accepted alias. Whitespace-only aliases are dropped; with `required`, an empty result is an error.
    """
    out: list[str] = []

    def walk(v: Any, path: str) -> None:
        if isinstance(v, str):
            s = v.strip()
            if s and s not in out:
                out.append(s)
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                walk(item, f"{path}[{i}]")
        else:
            raise DataError(file, index, path, f"expected a string or a list of strings, got {type(v).__name__}")

    if value is None:
        if required:
            raise DataError(file, index, field, "missing answer")
        return out
    walk(value, field)
    if required and not out:
        raise DataError(file, index, field, "empty answer")
    return out


def _str(raw: dict, key: str, file: str, index: int, *, required: bool = True, empty_ok: bool = False,
         what: str = "") -> str:
    if key not in raw or raw[key] is None:
        if required:
            raise DataError(file, index, key, "missing field")
        return ""
    v = raw[key]
    if not isinstance(v, str):
        raise DataError(file, index, key, f"expected a string, got {type(v).__name__}")
    v = v.strip()
    if not v and not empty_ok:
        raise DataError(file, index, key, f"empty {what or 'string'}")
    return v


def _str_list(value: Any, file: str, index: int, field: str) -> list[str]:
    """A string or a list of strings (e.g. rephrase prompts) -> list of non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataError(file, index, field, f"expected a string or a list of strings, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(file, index, f"{field}[{i}]", f"expected a string, got {type(v).__name__}")
        if v.strip():
            out.append(v.strip())
    return out


def _probes(section: Any, field: str, file: str, index: int) -> list[Probe]:
    """KnowEdit {Kind: [{prompt, ground_truth}] | {prompt, ground_truth}} -> Probes."""
    if section is None:
        return []
    if not isinstance(section, dict):
        raise DataError(file, index, field, f"expected a mapping of kind -> probes, got {type(section).__name__}")
    out: list[Probe] = []
    for kind, items in section.items():
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise DataError(file, index, f"{field}.{kind}", f"expected a list of probes, got {type(items).__name__}")
        for j, item in enumerate(items):
            where = f"{field}.{kind}[{j}]"
            if not isinstance(item, dict):
                raise DataError(file, index, where, f"expected an object, got {type(item).__name__}")
            prompt = item.get("prompt")
            if not isinstance(prompt, str):
                raise DataError(file, index, f"{where}.prompt",
                                "missing field" if prompt is None else f"expected a string, got {type(prompt).__name__}")
            if not prompt.strip():
                raise DataError(file, index, f"{where}.prompt", "empty prompt")
            answer = normalize_answer(item.get("ground_truth"), file, index, f"{where}.ground_truth")
            out.append(Probe(kind=normalize_kind(kind), prompt=prompt.strip(), answer=answer))
    return out


def _require_object(raw: Any, file: str, index: int) -> dict:
    if not isinstance(raw, dict):
        raise DataError(file, index, "<record>", f"expected a JSON object, got {type(raw).__name__}")
    return raw


# ------------------------------------------------------------------------------------ readers
def read_knowedit(raw: Any, *, task: str, case_id: str, file: str, index: int, **_: Any) -> EditRecord:
    raw = _require_object(raw, file, index)
    rephrase_key = "rephrase_prompt" if "rephrase_prompt" in raw else "rephrase"
    return EditRecord(
        task=task,
        case_id=case_id,
        subject=_str(raw, "subject", file, index),
        prompt=_str(raw, "prompt", file, index, what="prompt"),
        target_new=_str(raw, "target_new", file, index, what="target"),
        ground_truth=normalize_answer(raw.get("ground_truth"), file, index, "ground_truth", required=False),
        rephrase_prompts=_str_list(raw.get(rephrase_key), file, index, rephrase_key),
        locality=_probes(raw.get("locality"), "locality", file, index),
        portability=_probes(raw.get("portability"), "portability", file, index),
    )


def read_mend(raw: Any, *, task: str, case_id: str, file: str, index: int, **_: Any) -> EditRecord:
    raw = _require_object(raw, file, index)
    loc_prompt = _str(raw, "locality_prompt", file, index, what="prompt")
    return EditRecord(
        task=task,
        case_id=case_id,
        subject=_str(raw, "subject", file, index),
        prompt=_str(raw, "prompt", file, index, what="prompt"),
        target_new=_str(raw, "target_new", file, index, what="target"),
        ground_truth=normalize_answer(raw.get("ground_truth"), file, index, "ground_truth"),
        rephrase_prompts=_str_list(_str(raw, "rephrase_prompt", file, index, what="prompt"), file, index,
                                   "rephrase_prompt"),
        locality=[Probe("neighborhood", loc_prompt,
                        normalize_answer(raw.get("locality_ground_truth"), file, index, "locality_ground_truth"))],
    )


def read_zsre_mend(raw: Any, *, task: str, case_id: str, file: str, index: int, **_: Any) -> EditRecord:
    raw = _require_object(raw, file, index)
    if "answers" not in raw:
        raise DataError(file, index, "answers", "missing field")
    return EditRecord(
        task=task,
        case_id=case_id,
        subject=_str(raw, "subject", file, index),
        prompt=_str(raw, "src", file, index, what="prompt"),
        target_new=_str(raw, "alt", file, index, what="target"),
        ground_truth=normalize_answer(raw["answers"], file, index, "answers"),
        rephrase_prompts=_str_list(_str(raw, "rephrase", file, index, what="prompt"), file, index, "rephrase"),
        locality=[Probe("nq", _str(raw, "loc", file, index, what="prompt"),
                        normalize_answer(raw.get("loc_ans"), file, index, "loc_ans"))],
    )


def _sentences(raw: dict, key: str, file: str, index: int) -> list[str]:
    if key not in raw:
        raise DataError(file, index, key, "missing field")
    v = raw[key]
    if not isinstance(v, list):
        raise DataError(file, index, key, f"expected a list of sentences, got {type(v).__name__}")
    out = []
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise DataError(file, index, f"{key}[{i}]", f"expected a string, got {type(s).__name__}")
        if s.strip():
            out.append(s.strip())
    if not out:
        raise DataError(file, index, key, "empty target: no sentences of this polarity")
    return out


def read_convsent(raw: Any, *, task: str, case_id: str, file: str, index: int, seed: int = 0,
                  **_: Any) -> EditRecord:
    """One edit per topic: a seeded target label, a question about the topic, and one sentence of
    that label as the edit's target. The other-topic (drawdown) probes are drawn after the split,
    from records of the same split only (`other_topic_locality`)."""
    raw = _require_object(raw, file, index)
    topic = _str(raw, "ent", file, index, what="topic")
    pos = _sentences(raw, "pos", file, index)
    neg = _sentences(raw, "neg", file, index)
    label = LABELS[stable_int(seed, case_id, "label") % 2]
    good, bad = (pos, neg) if label == "positive" else (neg, pos)
    target = good[stable_int(seed, case_id, "target") % len(good)]
    return EditRecord(
        task=task,
        case_id=case_id,
        subject=topic,
        prompt=CONVSENT_PROMPT.format(topic=topic),
        target_new=target,
        sentiment=Sentiment(topic=topic, label=label, good=list(good), bad=list(bad)),
    )


def other_topic_locality(records: list[EditRecord], seed: int, n_other: int = 2) -> list[EditRecord]:
    """ConvSent records of one split -> each gets `n_other` probes about other topics of that split.

    Drawing after the split keeps a test record's drawdown probes out of the training topics. The
    walk starts at a hashed position with a hashed odd stride: deterministic and spread out; topics
    equal (case-insensitively) to the record's own or to an earlier pick are skipped.
    """
    topics = [(i, r.sentiment.topic, r.sentiment.good + r.sentiment.bad)
              for i, r in enumerate(records) if r.sentiment is not None]
    n = len(topics)
    if n < 2:
        return records
    out = list(records)
    for k, (i, topic, _) in enumerate(topics):
        r = records[i]
        seen = {topic.lower()}
        probes: list[Probe] = []
        start = stable_int(seed, r.case_id, "other") % n
        stride = (stable_int(seed, r.case_id, "stride") % max(n - 1, 1)) | 1
        for step in range(n):
            if len(probes) >= n_other:
                break
            j = (start + step * stride) % n
            _, o_topic, sents = topics[j]
            if j == k or o_topic.lower() in seen:
                continue
            seen.add(o_topic.lower())
            answer = sents[stable_int(seed, r.case_id, "other-answer", o_topic) % len(sents)]
            probes.append(Probe("other_topic", CONVSENT_PROMPT.format(topic=o_topic), [answer]))
        out[i] = dataclasses.replace(r, locality=probes)
    return out


READERS: dict[str, Callable[..., EditRecord]] = {
    "knowedit": read_knowedit,
    "mend": read_mend,
    "zsre_mend": read_zsre_mend,
    "convsent": read_convsent,
}


def get_reader(name: str) -> Callable[..., EditRecord]:
    if name not in READERS:
        from ..config import ConfigError

        raise ConfigError(f"unknown reader {name!r}; known: {sorted(READERS)}")
    return READERS[name]


# --------------------------------------------------------------------------------------- files
def load_json_records(path: str | os.PathLike) -> list[Any]:
    """A JSON array (or JSON Lines, for *.jsonl) -> list of raw records; DataError on bad JSON."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(str(p), None, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(str(p), None, None, f"not UTF-8 text: {e}") from None
    if p.suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(str(p), len(out), None, f"malformed JSON on line {i + 1}: {e.msg}") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(p), None, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise DataError(str(p), None, "<top level>", f"expected a JSON array of records, got {type(data).__name__}")
    return data


def case_ids(task: str, path: str | os.PathLike, raws: list[Any]) -> list[str]:
    """`<task>/<file stem>/<content hash>`; an exact duplicate record gets a `~2`, `~3`... suffix."""
    stem = Path(path).stem
    seen: dict[str, int] = {}
    out = []
    for raw in raws:
        h = content_hash(raw)
        seen[h] = seen.get(h, 0) + 1
        out.append(f"{task}/{stem}/{h}" + (f"~{seen[h]}" if seen[h] > 1 else ""))
    return out


@functools.lru_cache(maxsize=16)
def _parsed(path: str, mtime_ns: int, size: int, task: str) -> tuple[list[Any], list[str]]:
    raws = load_json_records(path)
    return raws, case_ids(task, path, raws)


def parsed_source(path: str | os.PathLike, task: str) -> tuple[list[Any], list[str]]:
    """Raw records and case ids of a file (cached per process while the file is unchanged)."""
    p = str(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError(p, None, None, "file not found") from None
    return _parsed(p, st.st_mtime_ns, st.st_size, task)


def read_source(path: str | os.PathLike, reader: str, task: str, seed: int = 0, *, start: int = 0,
                stop: int | None = None, on_error: str = "raise") -> tuple[list[tuple[int, EditRecord]], list[DataError]]:
    """Convert records [start:stop] of one file -> ([(index, record)], [errors]).

    on_error="raise" raises the first DataError; "skip" collects them and goes on. A file that is not
    valid JSON raises (or, under skip, is returned as a single error with index None).
    """
    fn = get_reader(reader)
    try:
        raws, ids = parsed_source(path, task)
    except DataError as e:
        if on_error == "raise":
            raise
        return [], [e]
    file = str(path)
    stop = len(raws) if stop is None else min(stop, len(raws))
    good: list[tuple[int, EditRecord]] = []
    bad: list[DataError] = []
    for i in range(start, stop):
        try:
            good.append((i, fn(raws[i], task=task, case_id=ids[i], file=file, index=i, seed=seed)))
        except DataError as e:
            if on_error == "raise":
                raise
            bad.append(e)
    return good, bad

"""Turn raw LLM completions into candidate instructions: clean, bound, check slots, deduplicate.

Slots (`[LABEL]`, `[TOPIC]` for ConvSent) are not named in code: a task requires the bracketed
upper-case slots that every instruction of its YAML pool carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import TaskConfig

_SLOT = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
_PREFIX = re.compile(
    r"^(?:\s*(?:[-*•>#]+|\d+[.)]|\(?[a-z]\)|instruction\s*\d*\s*[:.\-]|new instruction\s*[:.\-]"
    r"|improved instruction\s*[:.\-]|description\s*[:.\-]|answer\s*[:.\-])\s*)+",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(r"^(sure|here|certainly|okay|ok|of course)\b.*[:!]\s*$", re.IGNORECASE)
# Small writers parrot the feedback ("The instruction's performance is 0.589."): not an instruction.
_ECHO = re.compile(r"\s*(the )?instruction'?s? performance is\s*[\d.]+\d\.?\s*", re.IGNORECASE)
# A score in the feedback's format (0.650): the writer is talking about scores, not the task.
_SCORE = re.compile(r"\b[01]\.\d{2,}\b")
_QUOTES = "\"'`“”‘’*_"


def required_slots(task: TaskConfig) -> tuple[str, ...]:
    """The slots every instruction of the task's YAML pool carries, as written: ("[LABEL]", ...)."""
    pools = [set(_SLOT.findall(i.text)) for i in task.instructions]
    if not pools:
        return ()
    return tuple(f"[{s}]" for s in sorted(set.intersection(*pools)))


def dedupe_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\[\]]+", " ", text.lower()).split())


def _first_line(raw: str) -> str:
    for line in raw.replace("\r", "\n").split("\n"):
        line = line.strip()
        if not line or _PREAMBLE.match(line):
            continue
        return line
    return ""


def _canonical_slots(text: str, slots: tuple[str, ...]) -> str:
    """{LABEL}, <label>, [ Label ] -> [LABEL] for the task's slots."""
    for slot in slots:
        name = slot[1:-1]
        text = re.sub(r"[\[\{<]\s*" + re.escape(name) + r"\s*[\]\}>]", slot, text, flags=re.IGNORECASE)
    return text


def _bound(text: str, max_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind("."))
    if end >= max_chars // 4:
        return cut[: end + 1].strip(), True
    return cut.rsplit(" ", 1)[0].rstrip(",;:- ") + ".", True


@dataclass
class Cleaned:
    text: str
    status: str  # ok | repaired | truncated | rejected:<why>
    raw: str

    @property
    def accepted(self) -> bool:
        return not self.status.startswith("rejected")


def clean(raw: str, slots: tuple[str, ...] = (), *, max_chars: int = 300, min_words: int = 4,
          slot_policy: str = "repair") -> Cleaned:
    """One completion -> one instruction (the first substantive line), or a rejection reason."""
    text = _first_line(raw)
    text = _ECHO.sub(" ", text)
    text = _PREFIX.sub("", text).strip()
    text = text.strip(_QUOTES + " ").strip()
    text = text.replace("**", "")
    text = " ".join(text.split())
    text = _canonical_slots(text, slots)
    if not text:
        return Cleaned("", "rejected:empty", raw)
    if _SCORE.search(text):
        return Cleaned(text, "rejected:echoes_scores", raw)
    if slot_policy not in ("repair", "reject"):
        raise ValueError(f"slot_policy must be repair|reject, got {slot_policy!r}")
    if slot_policy == "reject" and any(s not in text for s in slots):
        return Cleaned(text, "rejected:missing_slots", raw)
    status = "ok"
    # Bound first, leaving room for the slots a repair may have to append.
    room = max_chars - sum(len(s) + len(s) // 2 + 4 for s in slots)
    text, truncated = _bound(text, max(room, max_chars // 2))
    missing = [s for s in slots if s not in text]
    if missing:
        if slot_policy == "reject":  # a present slot was cut off by the bound
            return Cleaned(text, "rejected:too_long", raw)
        if not text.endswith((".", "!", "?")):
            text += "."
        # The slot's name says what it holds; it is filled per record later.
        text += "".join(f" {s[1:-1].title()}: {s}." for s in missing)
        status = "repaired"
    elif truncated:
        status = "truncated"
    words = [w for w in _SLOT.sub(" ", text).split() if any(c.isalpha() for c in w)]
    if len(words) < min_words:
        return Cleaned(text, "rejected:too_short", raw)
    return Cleaned(text, status, raw)

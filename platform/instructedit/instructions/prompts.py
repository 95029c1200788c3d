"""The words the optimiser says to the writer LLM (kept here, apart from the loop's logic).

Round 1 asks for an instruction from the task description alone. Later rounds list the best
instructions so far, worst to best, each with its measured score, and ask for a better one.
"""

from __future__ import annotations

from .writer import Message

SYSTEM = (
    "You write instructions for a knowledge-editing system. An instruction is one or two plain "
    "sentences that tell the editor what kind of change to make to a language model. Answer with "
    "the instruction only: no preamble, no quotes, no list, no explanation."
)

FIRST = (
    "Task description: {description}\n\n"
    "{slot_note}"
    "Write one instruction of at most {max_words} words that tells the editor what this task asks for."
)

FEEDBACK = (
    "Task description: {description}\n\n"
    "Instructions written so far for this task, each followed by how well an editor trained with it "
    "did (edit success from 0 to 1; higher is better), from worst to best:\n\n"
    "{history}\n\n"
    "{slot_note}"
    "Write one new instruction of at most {max_words} words that should score higher than all of "
    "them: keep what the best ones do well and fix what the weaker ones miss. Do not repeat any of them."
)

HISTORY_ITEM = "Instruction: {text}\nThe instruction's performance is {score:.3f}."

SLOT_NOTE = (
    "The instruction must contain the placeholders {slots} exactly as written (square brackets "
    "included); they are filled in for every example.\n\n"
)


def first_round(description: str, slots: tuple[str, ...], max_words: int) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": FIRST.format(description=description.strip(), slot_note=_slot_note(slots),
                                                 max_words=max_words)},
    ]


def feedback_round(description: str, slots: tuple[str, ...], max_words: int,
                   scored: list[tuple[str, float]]) -> list[Message]:
    """`scored`: (instruction, score) pairs to show, in the order to show them (worst first)."""
    history = "\n\n".join(HISTORY_ITEM.format(text=t, score=s) for t, s in scored)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": FEEDBACK.format(description=description.strip(), history=history,
                                                    slot_note=_slot_note(slots), max_words=max_words)},
    ]


def _slot_note(slots: tuple[str, ...]) -> str:
    return SLOT_NOTE.format(slots=" and ".join(slots)) if slots else ""

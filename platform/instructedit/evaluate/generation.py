"""Generation-based success: greedy continuations of plain prompts, batched and KV-cached.

Teacher forcing feeds the target tokens in and asks only whether each is the argmax, which
overstates what a user sees (the model may never produce the target itself). Here the model
decodes greedily from the plain prompt; an edit succeeds when the normalised continuation starts
with the normalised target (any alias), on a word boundary. For locality, the pre- and post-edit
greedy continuations of an unrelated prompt must be identical.

`greedy` runs any forward-compatible HF causal LM: edits are applied by the caller (the patched
forward hooks row by row, or a dense apply), so the same code serves the batched path and the
one-record reference.
"""

from __future__ import annotations

import re
import unicodedata

import torch

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed (SQuAD-style, articles kept)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return _SPACE.sub(" ", text).strip()


def starts_with(continuation: str, targets: list[str]) -> bool:
    """True when the continuation begins with one of the targets as whole words."""
    c = normalize(continuation)
    for t in targets:
        t = normalize(t)
        if t and (c == t or c.startswith(t + " ")):
            return True
    return False


def encode_prompts(tokenizer, prompts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each prompt as evaluation encodes them (special tokens, cut from the left)."""
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=True)["input_ids"][-max_length:]
        if not ids:
            ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        out.append(ids)
    return out


def answer_tokens(tokenizer, answers: list[str]) -> int:
    """Longest answer in tokens (with the leading space the answer has after a prompt)."""
    return max((len(tokenizer(" " + a.strip(), add_special_tokens=False)["input_ids"]) for a in answers if a.strip()),
               default=1)


@torch.no_grad()
def greedy(model, tokenizer, prompt_ids: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy continuations (`new_tokens` each, cut at EOS) of left-padded prompts, KV-cached.

    Left padding keeps every row's last prompt token in the last column; explicit position ids
    make the padded rows see the same positions as an unpadded prompt.
    """
    if not prompt_ids:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for r, p in enumerate(prompt_ids):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    steps = []
    for k in range(new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        steps.append(nxt)
        if k + 1 == new_tokens:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                    cache=out.cache, use_cache=True, logits_to_keep=1)
    gen = torch.stack(steps, dim=1).tolist()
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in gen]


def decode(tokenizer, rows: list[list[int]]) -> list[str]:
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]

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

import contextlib
import re
import unicodedata
from collections.abc import Callable

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


def _all_ended(steps: list[torch.Tensor], eos: int | None) -> bool:
    """Every row has produced EOS: what follows is cut anyway."""
    return eos is not None and bool(torch.stack(steps, 1).eq(eos).any(1).all())


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
        if k + 1 == new_tokens or _all_ended(steps, tokenizer.eos_token_id):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                    cache=out.cache, use_cache=True, logits_to_keep=1)
    gen = torch.stack(steps, dim=1).tolist()
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in gen]


def _prefill_lower(split, prompt_ids: list[list[int]]):
    """Left-padded lower hidden states, mask, positions and a cache of the lower blocks' keys/values
    of the prompts, from `split`'s shared-prefix cache."""
    from transformers import DynamicCache

    heads = split.prefix_states(prompt_ids)
    ref = heads[0]
    n, width = len(prompt_ids), max(len(p) for p in prompt_ids)
    hidden = ref.hidden.new_zeros(n, width, ref.hidden.shape[-1])
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, (p, h) in enumerate(zip(prompt_ids, heads)):
        hidden[r, width - len(p):] = h.hidden
        mask[r, width - len(p):] = 1
    mask = mask.to(hidden.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    for layer, (k0, v0) in enumerate(ref.kv):  # left-padded like the rows
        k = k0.new_zeros(n, k0.shape[0], width, k0.shape[-1])
        v = v0.new_zeros(n, v0.shape[0], width, v0.shape[-1])
        for r, (p, h) in enumerate(zip(prompt_ids, heads)):
            k[r, :, width - len(p):], v[r, :, width - len(p):] = h.kv[layer]
        cache.update(k, v, layer)
    return hidden, mask, pos, cache


@torch.no_grad()
def greedy_split(split, tokenizer, prompt_ids: list[list[int]], new_tokens: int) -> list[list[int]]:
    """`greedy` with the prompts' lower blocks from `split`'s shared-prefix cache (editor/split.py):
    the lower blocks are never edited, so a prompt scored or generated from before the edit runs
    them once. The upper blocks prefill from those states; the decoding steps run the whole model
    on a cache joining both halves' keys/values. Same continuations as `greedy`."""
    if not prompt_ids:
        return []
    hidden, mask, pos, lower = _prefill_lower(split, prompt_ids)
    final, cache = split.upper_prefill(hidden, mask, pos)
    for layer in range(split.split_at):
        cache.update(lower.layers[layer].keys, lower.layers[layer].values, layer)
    logits = split.head(final[:, -1])
    steps = []
    for step in range(new_tokens):
        nxt = logits.argmax(-1)
        steps.append(nxt)
        if step + 1 == new_tokens or _all_ended(steps, tokenizer.eos_token_id):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = split.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, cache=cache,
                          use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1]
    gen = torch.stack(steps, dim=1).tolist()
    eos = tokenizer.eos_token_id
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in gen]


@torch.no_grad()
def unchanged_split(split, tokenizer, prompt_ids: list[list[int]], new_tokens: int,
                    edited: Callable[[list[int]], contextlib.AbstractContextManager]) -> list[bool]:
    """Per prompt: is its greedy continuation (cut at EOS) the same after the edit as before?

    Decoded jointly: while a row's two continuations agree, the lower blocks (never edited) see the
    same tokens, so they run once for both; the upper blocks run twice, plain and inside
    `edited(rows)` (the edit patched for those prompt indices). A row is decided when its two next
    tokens first differ (False: the cut continuations differ there) or are EOS together (True),
    and leaves the batch; rows still agreeing after `new_tokens` are True. The same answers as
    comparing `greedy` before with `greedy` after."""
    if not prompt_ids:
        return []
    hidden, mask, pos, lower = _prefill_lower(split, prompt_ids)
    final, pre = split.upper_prefill(hidden, mask, pos)
    active = list(range(len(prompt_ids)))
    with edited(active):
        final_post, post = split.upper_prefill(hidden, mask, pos)
    lg_pre, lg_post = split.head(final[:, -1]), split.head(final_post[:, -1])
    eos = tokenizer.eos_token_id
    same = [True] * len(prompt_ids)
    for step in range(new_tokens):
        a, b = lg_pre.argmax(-1), lg_post.argmax(-1)
        differ = a.ne(b)
        for i in differ.nonzero().flatten().tolist():
            same[active[i]] = False
        done = differ | (a.eq(eos) if eos is not None else torch.zeros_like(differ))
        if step + 1 == new_tokens or bool(done.all()):
            break
        if done.any():
            keep = (~done).nonzero().flatten()
            active = [active[i] for i in keep.tolist()]
            for c in (lower, pre, post):
                c.batch_select_indices(keep)
            a, mask, pos = a[keep], mask[keep], pos[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        h = split.lower_step(a[:, None], mask, pos, lower)
        lg_pre = split.head(split.upper_step(h, mask, pos, pre)[:, -1])
        with edited(active):
            lg_post = split.head(split.upper_step(h, mask, pos, post)[:, -1])
    return same


def decode(tokenizer, rows: list[list[int]]) -> list[str]:
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]

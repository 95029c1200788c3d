"""Rows of different lengths through the upper blocks as one packed sequence: the edit API's passes.

The edit API scores a handful of rows per request (the edit input, the plain prompt, each
rephrase, the locality prompts) before and after the edit: an instructed edit input is ~45 tokens
of SmolLM2, a plain prompt ~10, so a padded batch of them is mostly padding. `upper_packed` runs
them as one sequence with a block-diagonal causal mask and per-row positions (`pack_layout`): one
pass over the weights, the real tokens only. (The lower blocks run once per edit() through
SplitModel.lower with the rows' shared instruction prefix, editor/split.py: with the prefix cut
off, the rows left are of similar length.)

`lower_stamp` tells whether a weight below the split changed: SplitModel's shared-prefix cache
assumes the lower blocks never change, which holds for one editor's own edits but not for a model
that another method (ROME and MEMIT edit lower blocks) edits in place beside it.

Numerically this is the model's own forward (HF's backbone with its block list cut, as
editor/split.py does) with another summation order: per-row states agree with the padded batch to
float32 rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .split import SplitModel

# At most this many tokens a packed pass (a longer row goes alone). Attention over a packed
# sequence is quadratic in its length, so packs stay short: at 256 tokens it costs a few per cent
# of the MLPs' work on SmolLM2, and a pack already holds the rows of several requests.
PACK_TOKENS = 256


def lower_stamp(split: SplitModel) -> tuple:
    """Changes whenever a weight the lower blocks use changes (in place, or replaced)."""
    above = {id(p) for b in split.blocks[split.split_at:] for p in b.parameters()}
    above |= {id(p) for p in split.final_norm.parameters()}
    return tuple((p.data_ptr(), p._version) for p in split.backbone.parameters() if id(p) not in above)


def upper_packed(split: SplitModel, hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Final (normed) hidden states per row, (len, d), from its lower hidden states (len, d)."""
    out: list[torch.Tensor] = [h for h in hidden]
    for chunk in chunks([len(h) for h in hidden]):
        lengths = [len(hidden[i]) for i in chunk]
        pos, mask = pack_layout(lengths, hidden[chunk[0]].dtype, hidden[chunk[0]].device)
        embeds = torch.cat([hidden[i] for i in chunk])[None]
        if split.pos_emb is not None:  # GPT-2 adds learned positions to inputs_embeds: already in `hidden`
            embeds = embeds - split.pos_emb(pos)
        with split._blocks(list(split.blocks[split.split_at:])):
            final = split.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                                   use_cache=False).last_hidden_state[0]
        for i, h in zip(chunk, final.split(lengths)):
            out[i] = h
    return out


def chunks(lengths: list[int], limit: int | None = None) -> list[list[int]]:
    """Consecutive row indices grouped into packs of at most `limit` tokens (PACK_TOKENS)."""
    limit = PACK_TOKENS if limit is None else limit
    out: list[list[int]] = []
    total = 0
    for i, n in enumerate(lengths):
        if not out or total + n > limit:
            out.append([])
            total = 0
        out[-1].append(i)
        total += n
    return out


def pack_layout(lengths: list[int], dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (1, T) and the additive 4-D attention mask (1, 1, T, T) of rows packed into
    one sequence, each row attending causally to itself only. Additive floats, not booleans: HF
    passes a prepared 4-D mask through as it is, and its eager attention adds it to the scores."""
    seg = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(lengths)])
    pos = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
    allowed = torch.ones(len(seg), len(seg), dtype=torch.bool, device=device).tril() & (seg[:, None] == seg[None, :])
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return pos, mask[None, None]

"""Reuse of the frozen lower layers.

Only the top blocks are edited, so the blocks below the lowest edited one give the same hidden
states before and after an edit. `lower()` runs them once per batch; `upper()` runs the remaining
blocks from those hidden states as often as needed (pre-edit, post-edit, locality). Both call the
model's own backbone with its block list temporarily cut, so no model code is copied: the layout
(backbone, block list, final norm, head, learned position embedding) comes from the model YAML.

Shared prefixes: rows that begin with the same tokens (an instruction, a ConvSent topic question
followed by 20 sentences) have the same lower hidden states and keys/values there (a causal model;
the lower blocks are never edited). `lower(..., prefixes=)` takes, per row, token counts at which
its ids may be cut; each distinct prefix runs through the lower blocks once, its hidden states and
per-block keys/values are kept (LRU, `shared_cache_mb`), and the rest of the row runs with that
cache (positions offset by the prefix length, the attention mask over prefix + row). The prefix
hidden states are put back in front, so the output is the same (N, L, d) tensor as without.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..models import get_module

# A batched forward costs about this many tokens' work beyond its padded tokens (per-call overhead,
# smaller matrix products): `tail_groups` splits rows only where that saves more padding.
CALL_TOKENS = 32


def tail_groups(lengths: Sequence[int], call_tokens: int = CALL_TOKENS) -> list[list[int]]:
    """Row indices grouped for batched forwards of right-padded rows of these lengths: sorted by
    length, cut where the padding saved outweighs a forward's overhead (`call_tokens`), i.e. the
    partition minimising sum(call_tokens + rows x longest). The rows that continue a cached prefix
    differ in length much more than whole rows (a chunk is sorted by whole-row length, and the
    prefixes cut off differ), so one padded batch of them was ~1.5x their real tokens (ConvSent)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    distinct: list[int] = []  # distinct lengths, ascending, and the rows up to each
    upto: list[int] = []
    for k, i in enumerate(order):
        if distinct and distinct[-1] == lengths[i]:
            upto[-1] = k + 1
        else:
            distinct.append(lengths[i])
            upto.append(k + 1)
    best = [0.0] * (len(distinct) + 1)  # best[j]: cost of the rows of the j shortest lengths
    start = [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        best[j], start[j] = min((best[i] + call_tokens + (upto[j - 1] - (upto[i - 1] if i else 0)) * distinct[j - 1], i)
                                for i in range(j))
    groups: list[list[int]] = []
    j = len(distinct)
    while j:
        i = start[j]
        groups.append(order[(upto[i - 1] if i else 0): upto[j - 1]])
        j = i
    return groups[::-1]


def _attending(cut: list[int], lens: list[int], kvs: list[list | None], first_layer: int, dtype, dev):
    """Inputs of one batched forward of rows continuing cached prefixes: row i's `lens[i]` tokens
    after its first `cut[i]`, attending to the prefix's keys/values `kvs[i]` (per layer from
    `first_layer` on: (heads, cut, head_dim)). Returns position ids (n, ls), the cache (the prefixes'
    keys/values left-padded to the longest cut; None if no row has one) and the attention mask:
    additive (n, 1, ls, kp + ls) over prefix + row (prepared masks pass through as they are), or
    a plain (n, ls) one without a cache."""
    n, kp, ls = len(cut), max(cut), max(lens)
    pos = torch.tensor(cut)[:, None] + torch.arange(ls)[None]
    seen = torch.zeros((n, kp + ls), dtype=torch.bool)  # which cache slots hold a real token
    for i, (c, m) in enumerate(zip(cut, lens)):
        seen[i, kp - c: kp + m] = True
    pos, seen = pos.to(dev), seen.to(dev)
    if not kp:
        return pos, None, seen.long()
    from transformers import DynamicCache

    cache = DynamicCache()
    ref = next(kv for kv in kvs if kv is not None)
    for layer, (k0, v0) in enumerate(ref):
        k = k0.new_zeros(n, k0.shape[0], kp, k0.shape[-1])
        v = v0.new_zeros(n, v0.shape[0], kp, v0.shape[-1])
        for i, kv in enumerate(kvs):
            if kv is not None and cut[i]:
                k[i, :, kp - cut[i]:], v[i, :, kp - cut[i]:] = kv[layer]
        cache.update(k, v, first_layer + layer)
    causal = torch.ones(ls, kp + ls, dtype=torch.bool, device=dev).tril(kp)
    allowed = causal[None] & seen[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    return pos, cache, mask[:, None]


def _upper_plan(input_ids: torch.Tensor, attention_mask: torch.Tensor, prefixes, row_edit) -> tuple | None:
    """Per row, where its upper states may come from another row's prefix pass: (cut, reps), row
    i's first cut[i] positions shared with row reps[i] (the first row with the same edit and ids up
    to there), the longest of its cuts that another row of the batch shares; None if no row
    shares one."""
    lengths = attention_mask.sum(1).tolist()
    edit = row_edit.tolist() if row_edit is not None else [0] * len(lengths)
    bounds = [sorted({b for b in bs if 0 < b < n}, reverse=True) for bs, n in zip(prefixes, lengths)]
    keys = [[(edit[i], tuple(input_ids[i, :b].tolist())) for b in bs] for i, bs in enumerate(bounds)]
    owner: dict[tuple, int] = {}
    count: dict[tuple, int] = {}
    for i, ks in enumerate(keys):
        for k in ks:
            owner.setdefault(k, i)
            count[k] = count.get(k, 0) + 1
    cut, reps = [0] * len(lengths), list(range(len(lengths)))
    for i, (bs, ks) in enumerate(zip(bounds, keys)):
        for b, k in zip(bs, ks):
            if count[k] > 1:
                cut[i], reps[i] = b, owner[k]
                break
    return (cut, reps) if any(cut) else None


@dataclass
class _Prefix:
    hidden: torch.Tensor  # (n, d) hidden states entering block split_at
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per lower block: keys, values (heads, n, head_dim)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hidden, *(x for kv in self.kv for x in kv)))


class SplitModel:
    def __init__(self, model: nn.Module, cfg: ModelConfig, split_at: int, shared_cache_mb: float = 256):
        self.model = model
        self.cfg = cfg
        self.split_at = split_at
        parent_path, _, attr = cfg.blocks.rpartition(".")
        self._blocks_parent = get_module(model, parent_path) if parent_path else model
        self._blocks_attr = attr
        self.blocks: nn.ModuleList = getattr(self._blocks_parent, attr)
        self.backbone = get_module(model, cfg.backbone)
        self.final_norm = get_module(model, cfg.final_norm)
        self.head = get_module(model, cfg.lm_head)
        self.pos_emb = get_module(model, cfg.position_embedding) if cfg.position_embedding else None
        self._cache: dict[tuple[int, ...], torch.Tensor] | None = None
        self._cache_budget = 0
        self.cache_hits = self.cache_misses = 0
        self._shared: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()  # lower(prefixes=)
        self._shared_budget = int(shared_cache_mb * 2**20)
        self._shared_bytes = 0
        self.shared_hits = self.shared_misses = 0

    def enable_cache(self, max_mb: float) -> None:
        """Keep each sequence's lower hidden states: the base model is frozen, so a record seen
        again (next epoch, next validation, pre vs post) never reruns the lower blocks."""
        self._cache = {}
        self._cache_budget = int(max_mb * 2**20)

    @contextlib.contextmanager
    def _blocks(self, blocks: list[nn.Module]) -> Iterator[None]:
        full = self.blocks
        setattr(self._blocks_parent, self._blocks_attr, nn.ModuleList(blocks))
        try:
            yield
        finally:
            setattr(self._blocks_parent, self._blocks_attr, full)

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              prefixes: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """Hidden states entering block `split_at` (no grad: the lower blocks are frozen).
        `prefixes`: per row, the token counts at which its leading ids may be shared with other
        rows (see the module docstring); right-padded rows."""
        if prefixes is not None and any(prefixes):
            return self._lower_prefixed(input_ids, attention_mask, prefixes)
        if self._cache is None:
            return self._lower(input_ids, attention_mask)
        lengths = attention_mask.sum(1).tolist()
        keys = [tuple(input_ids[i, :n].tolist()) for i, n in enumerate(lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        self.cache_hits += len(keys) - len(missing)
        self.cache_misses += len(missing)
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            width = max(lengths[i] for i in missing)
            idx = torch.tensor(missing, device=input_ids.device)
            h = self._lower(input_ids[idx, :width], attention_mask[idx, :width])
            for j, i in enumerate(missing):
                row = h[j, : lengths[i]].clone()
                fresh[i] = row
                if self._cache_budget > row.numel() * row.element_size():
                    self._cache[keys[i]] = row
                    self._cache_budget -= row.numel() * row.element_size()
        first = fresh[missing[0]] if missing else self._cache[keys[0]]
        out = first.new_zeros(input_ids.shape[0], input_ids.shape[1], first.shape[-1])
        for i, k in enumerate(keys):
            out[i, : lengths[i]] = fresh[i] if i in fresh else self._cache[k]
        return out

    def _lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._lower_out(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]

    def _lower_out(self, **kwargs) -> tuple[torch.Tensor, object]:
        """The backbone cut to the lower blocks: (hidden states entering block split_at, output)."""
        captured: list[torch.Tensor] = []

        def grab(_mod, args, kw):
            captured.append(args[0] if args else kw["hidden_states"])

        handle = self.final_norm.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with self._blocks(list(self.blocks[: self.split_at])):
                out = self.backbone(**kwargs)
        finally:
            handle.remove()
        return captured[-1], out

    def lower_step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                   cache) -> torch.Tensor:
        """One decoding step of the lower blocks on their own KV cache (layers 0..split_at-1)."""
        return self._lower_out(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               cache=cache, use_cache=True)[0]

    def upper_step(self, hidden: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                   cache) -> torch.Tensor:
        """One decoding step (one new token a row) of the upper blocks on a cache that holds only
        their layers: the attention mask is prepared here (the model would size it from layer 0)."""
        embeds = hidden - self.pos_emb(position_ids) if self.pos_emb is not None else hidden
        seen = attention_mask.bool()[:, None, None, :]  # one query a row: causal is every real slot
        mask = torch.zeros(seen.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
            ~seen, torch.finfo(hidden.dtype).min)
        with self._blocks(list(self.blocks[self.split_at:])):
            out = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, cache=cache,
                                use_cache=True)
        return out.last_hidden_state

    # ------------------------------------------------------------------------- shared prefixes
    def clear_shared(self) -> None:
        self._shared.clear()
        self._shared_bytes = 0

    def _keep_shared(self, key: tuple[int, ...], entry: _Prefix) -> None:
        if key in self._shared or entry.nbytes > self._shared_budget:
            return
        self._shared[key] = entry
        self._shared_bytes += entry.nbytes
        while self._shared_bytes > self._shared_budget:
            _, old = self._shared.popitem(last=False)
            self._shared_bytes -= old.nbytes

    def _lower_prefixed(self, input_ids, attention_mask, prefixes) -> torch.Tensor:
        lengths = attention_mask.sum(1).tolist()
        rows = [input_ids[i, :n].tolist() for i, n in enumerate(lengths)]
        with torch.no_grad():
            parts = self._rows(rows, [tuple(p) for p in prefixes], want_kv=False)
        out = parts[0][0].new_zeros(input_ids.shape[0], input_ids.shape[1], parts[0][0].shape[-1])
        for i, (h, _) in enumerate(parts):
            out[i, : lengths[i]] = h
        return out

    def _rows(self, rows: list[list[int]], bounds: list[tuple[int, ...]], want_kv: bool
              ) -> list[tuple[torch.Tensor, list | None]]:
        """Lower hidden states (and keys/values if `want_kv`) of unpadded rows, each continuing
        its longest cached prefix among `bounds` (the longest bound is computed first when none
        is cached, itself from its shorter bounds)."""
        local: dict[tuple[int, ...], _Prefix] = {}
        chosen: list[int] = []
        need: dict[tuple[int, ...], tuple[int, ...]] = {}
        for row, bs in zip(rows, bounds):
            bs = tuple(sorted({b for b in bs if 0 < b < len(row)}))
            hit = next((b for b in reversed(bs) if tuple(row[:b]) in self._shared), 0)
            if hit:
                self.shared_hits += 1
                key = tuple(row[:hit])
                self._shared.move_to_end(key)
                local[key] = self._shared[key]
            elif bs:
                hit = bs[-1]
                key = tuple(row[:hit])
                if key not in need:
                    self.shared_misses += 1
                need[key] = bs[:-1]
            chosen.append(hit)
        if need:
            keys = list(need)
            for key, (h, kv) in zip(keys, self._rows([list(k) for k in keys], list(need.values()), want_kv=True)):
                local[key] = _Prefix(h, kv)
                self._keep_shared(key, local[key])
        return self._continue(rows, [local[tuple(r[:b])] if b else None for r, b in zip(rows, chosen)],
                              chosen, want_kv)

    def _continue(self, rows, heads: list[_Prefix | None], cut: list[int], want_kv: bool):
        """The lower forward of each row's tokens after `cut`, attending to its prefix: rows
        grouped by the length of what is left (`tail_groups`), one batched forward a group."""
        out: list = [None] * len(rows)
        for g in tail_groups([len(r) - c for r, c in zip(rows, cut)]):
            for i, res in zip(g, self._continue_group([rows[i] for i in g], [heads[i] for i in g],
                                                      [cut[i] for i in g], want_kv)):
                out[i] = res
        return out

    def _continue_group(self, rows, heads: list[_Prefix | None], cut: list[int], want_kv: bool):
        """One batched lower forward of each row's tokens after `cut`, attending to its prefix."""
        n, kp = len(rows), max(cut)
        tails = [r[c:] for r, c in zip(rows, cut)]
        ls = max(len(t) for t in tails)
        dev = next(self.backbone.parameters()).device
        ids = torch.zeros((n, ls), dtype=torch.long)
        for i, t in enumerate(tails):
            ids[i, : len(t)] = torch.tensor(t)
        dtype = next(h for h in heads if h is not None).hidden.dtype if kp else torch.float32
        pos, cache, mask = _attending(cut, [len(t) for t in tails], [h.kv if h is not None else None for h in heads],
                                      0, dtype, dev)
        hidden, out = self._lower_out(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos, cache=cache,
                                      use_cache=want_kv or cache is not None)
        result = []
        for i, (t, h) in enumerate(zip(tails, heads)):
            row_h = hidden[i, : len(t)]
            kv = None
            if want_kv:
                lo = kp - cut[i]
                kv = [(layer.keys[i, :, lo: kp + len(t)].clone(), layer.values[i, :, lo: kp + len(t)].clone())
                      for layer in out.cache.layers[: self.split_at]]
            result.append((torch.cat([h.hidden, row_h]) if h is not None else row_h.clone(), kv))
        return result

    def prefix_states(self, rows: list[list[int]]) -> list[_Prefix]:
        """Lower hidden states and keys/values of whole rows, kept as shared prefixes: a prompt
        generated from before and after an edit (or already scored with its prompt cut) runs the
        lower blocks once."""
        missing = list(dict.fromkeys(tuple(r) for r in rows if tuple(r) not in self._shared))
        self.shared_hits += len(rows) - len(missing)
        self.shared_misses += len(missing)
        fresh = {}
        if missing:
            with torch.no_grad():
                for key, (h, kv) in zip(missing, self._rows([list(k) for k in missing], [()] * len(missing), True)):
                    fresh[key] = _Prefix(h, kv)
                    self._keep_shared(key, fresh[key])
        return [fresh[tuple(r)] if tuple(r) in fresh else self._shared[tuple(r)] for r in rows]

    def upper_prefill(self, hidden: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
        """Upper blocks over left-padded lower hidden states with a KV cache: (final normed hidden
        states, the cache holding the upper blocks' keys/values)."""
        embeds = hidden - self.pos_emb(position_ids) if self.pos_emb is not None else hidden
        with self._blocks(list(self.blocks[self.split_at:])):
            out = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=True)
        return out.last_hidden_state, out.cache

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, prefixes: Sequence[Sequence[int]] | None = None,
              input_ids: torch.Tensor | None = None, row_edit: torch.Tensor | None = None) -> torch.Tensor:
        """Final (normed) hidden states from the lower hidden states, through blocks split_at..

        With `prefixes` (per row, cut points as in `lower`), `input_ids` and `row_edit` (the edit
        each row gets; all rows the same without edits): rows with the same edit and the same ids
        up to a cut (ConvSent: the ~20 sentences of a record after its topic question) have the
        same upper states there, so that prefix runs once and the rows' remaining tokens attend to
        its keys/values (under `hooks.patched`, each forward gets its own rows' edits through
        `hooks.rows_of`). Positions after a row's length are zeros, not padding states. No autograd
        capture inside (evaluation only)."""
        if prefixes is not None and input_ids is not None and any(prefixes):
            plan = _upper_plan(input_ids, attention_mask, prefixes, row_edit)
            if plan is not None:
                return self._upper_shared(hidden, attention_mask, *plan)
        embeds = hidden
        if self.pos_emb is not None:
            # GPT-2 adds learned positions to inputs_embeds; they are already in `hidden`.
            pos = torch.arange(hidden.shape[1], device=hidden.device)
            embeds = hidden - self.pos_emb(pos).unsqueeze(0)
        with self._blocks(list(self.blocks[self.split_at:])):
            out = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def _upper_shared(self, hidden: torch.Tensor, attention_mask: torch.Tensor, cut: list[int],
                      reps: list[int]) -> torch.Tensor:
        """`upper` of rows whose first cut[i] positions equal those of row reps[i]'s prefix."""
        from .hooks import rows_of

        dev = hidden.device
        lengths = attention_mask.sum(1).tolist()
        blocks = list(self.blocks[self.split_at:])
        first = sorted({r for r, c in zip(reps, cut) if c})  # one row per distinct prefix
        cp = max(cut)
        pmask = torch.zeros(len(first), cp, dtype=torch.long, device=dev)
        for j, r in enumerate(first):
            pmask[j, : cut[r]] = 1
        ppos = torch.arange(cp, device=dev)[None].expand(len(first), cp)
        idx = torch.tensor(first, dtype=torch.long, device=dev)
        with rows_of(idx), self._blocks(blocks):
            out = self.backbone(inputs_embeds=self._embeds(hidden[idx, :cp], ppos), attention_mask=pmask,
                                position_ids=ppos, use_cache=True)
        layers = out.cache.layers[self.split_at:]
        prefix = {r: (out.last_hidden_state[j], [(layer.keys[j], layer.values[j]) for layer in layers])
                  for j, r in enumerate(first)}
        final = hidden.new_zeros(hidden.shape[0], hidden.shape[1], hidden.shape[-1])
        tails = [n - c for n, c in zip(lengths, cut)]
        for g in tail_groups(tails):
            gc, gt = [cut[i] for i in g], [tails[i] for i in g]
            kvs = [[(k[:, : c], v[:, : c]) for k, v in prefix[reps[i]][1]] if c else None for i, c in zip(g, gc)]
            pos, cache, mask = _attending(gc, gt, kvs, self.split_at, hidden.dtype, dev)
            ls = max(gt)
            x = hidden.new_zeros(len(g), ls, hidden.shape[-1])
            for j, (i, c, t) in enumerate(zip(g, gc, gt)):
                x[j, :t] = hidden[i, c: c + t]
            gi = torch.tensor(g, dtype=torch.long, device=dev)
            with rows_of(gi), self._blocks(blocks):
                h = self.backbone(inputs_embeds=self._embeds(x, pos), attention_mask=mask, position_ids=pos,
                                  cache=cache, use_cache=cache is not None).last_hidden_state
            for j, (i, c, t) in enumerate(zip(g, gc, gt)):
                if c:
                    final[i, :c] = prefix[reps[i]][0][:c]
                final[i, c: c + t] = h[j, :t]
        return final

    def _embeds(self, hidden: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """inputs_embeds giving `hidden` after the backbone adds learned positions (GPT-2)."""
        return hidden - self.pos_emb(pos) if self.pos_emb is not None else hidden

    def logits(self, final_hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """LM-head logits, only where `mask` is True (answer positions): (n_selected, vocab)."""
        h = final_hidden[mask] if mask is not None else final_hidden
        return self.head(h)

    def full_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

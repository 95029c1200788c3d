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
        """One batched lower forward of each row's tokens after `cut`, attending to its prefix."""
        n, kp = len(rows), max(cut)
        tails = [r[c:] for r, c in zip(rows, cut)]
        ls = max(len(t) for t in tails)
        dev = next(self.backbone.parameters()).device
        ids = torch.zeros((n, ls), dtype=torch.long)
        pos = torch.zeros((n, ls), dtype=torch.long)
        seen = torch.zeros((n, kp + ls), dtype=torch.bool)  # which cache slots hold a real token
        for i, (t, c) in enumerate(zip(tails, cut)):
            ids[i, : len(t)] = torch.tensor(t)
            pos[i] = c + torch.arange(ls)
            seen[i, kp - c: kp + len(t)] = True
        ids, pos, seen = ids.to(dev), pos.to(dev), seen.to(dev)
        cache = None
        if kp:
            from transformers import DynamicCache

            cache = DynamicCache()
            ref = next(h for h in heads if h is not None)
            for layer, (k0, v0) in enumerate(ref.kv):
                k = k0.new_zeros(n, k0.shape[0], kp, k0.shape[-1])
                v = v0.new_zeros(n, v0.shape[0], kp, v0.shape[-1])
                for i, h in enumerate(heads):
                    if h is not None:
                        k[i, :, kp - cut[i]:], v[i, :, kp - cut[i]:] = h.kv[layer]
                cache.update(k, v, layer)
            causal = torch.ones(ls, kp + ls, dtype=torch.bool, device=dev).tril(kp)
            allowed = causal[None] & seen[:, None, :]
            dtype = ref.hidden.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
            mask = mask[:, None]  # (n, 1, ls, kp + ls), additive: prepared masks pass through as they are
        else:
            mask = seen.long()
        hidden, out = self._lower_out(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
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

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final (normed) hidden states from the lower hidden states, through blocks split_at.."""
        embeds = hidden
        if self.pos_emb is not None:
            # GPT-2 adds learned positions to inputs_embeds; they are already in `hidden`.
            pos = torch.arange(hidden.shape[1], device=hidden.device)
            embeds = hidden - self.pos_emb(pos).unsqueeze(0)
        with self._blocks(list(self.blocks[self.split_at:])):
            out = self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def logits(self, final_hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """LM-head logits, only where `mask` is True (answer positions): (n_selected, vocab)."""
        h = final_hidden[mask] if mask is not None else final_hidden
        return self.head(h)

    def full_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

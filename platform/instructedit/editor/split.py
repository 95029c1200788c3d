"""Reuse of the frozen lower layers.

Only the top blocks are edited, so the blocks below the lowest edited one give the same hidden
states before and after an edit. `lower()` runs them once per batch; `upper()` runs the remaining
blocks from those hidden states as often as needed (pre-edit, post-edit, locality). Both call the
model's own backbone with its block list temporarily cut, so no model code is copied: the layout
(backbone, block list, final norm, head, learned position embedding) comes from the model YAML.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..config import ModelConfig
from ..models import get_module


class SplitModel:
    def __init__(self, model: nn.Module, cfg: ModelConfig, split_at: int):
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

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering block `split_at` (no grad: the lower blocks are frozen)."""
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
        captured: list[torch.Tensor] = []

        def grab(_mod, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])

        handle = self.final_norm.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad(), self._blocks(list(self.blocks[: self.split_at])):
                self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            handle.remove()
        return captured[-1]

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

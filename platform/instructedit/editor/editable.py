"""The editable model: a frozen base model seen through the weights an editing method changes.

Every method (MEND, FT-L, ROME, MEMIT, AlphaEdit) edits through this one seam and has no trainable
parameter in it. An edit is a `LowRankEdit` per weight: per-edit factors with dW_e = D_e^T U_e
(out x in, logical orientation whatever the storage). `answer_logits` runs the upper blocks with
row r patched by edit row_edit[r], so B independent edits share one batched forward; `apply` sums
edits into the plain Hugging Face model and returns a handle whose revert() restores it bit for bit.

The blocks below the lowest edited one never change, so `lower()` runs them once per batch and
every pass above reuses those hidden states (editor/split.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..data.batches import TokenBatch
from ..models import LoadedModel, edited_layer_indices, edited_module_names, get_module, weight_fingerprint
from . import losses
from .hooks import LowRankEdit, capture, is_transposed, patched, weight_shape
from .split import SplitModel

Edits = dict[str, LowRankEdit]

__all__ = ["AppliedEdits", "EditableModel", "Edits", "LowRankEdit", "apply_edits", "edits_digest", "no_edits"]


class EditableModel:
    """The base model, the edited layers and the frozen-lower-block split (no parameters of its own).

    `layers`/`weights` choose what is edited: block indices (negative = from the top) and module
    name patterns with "{i}" for the block; by default the model YAML's edited_layers and
    edited_weights (MEND's top MLPs). The split sits at the lowest edited block.
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[int] | None = None,
                 weights: Sequence[str] | None = None):
        cfg = loaded.config
        if layers is not None or weights is not None:
            cfg = dataclasses.replace(
                cfg, edited_layers=tuple(cfg.edited_layers if layers is None else layers),
                edited_weights=tuple(cfg.edited_weights if weights is None else weights))
        self.loaded = loaded
        self.model_cfg: ModelConfig = loaded.config
        model = loaded.model
        self.layer_indices = edited_layer_indices(cfg, model)
        self.names = edited_module_names(cfg, model)
        if not self.names:
            raise ValueError(f"model {cfg.name}: nothing to edit (no edited_weights)")
        self.layers = {n: get_module(model, n) for n in self.names}
        self.split = SplitModel(model, self.model_cfg, min(self.layer_indices))
        self.fingerprint = weight_fingerprint(model, self.names)

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def edits_in_dim(self, name: str) -> int:
        return weight_shape(self.layers[name])[1]

    def lower(self, batch: TokenBatch) -> torch.Tensor:
        return self.split.lower(batch.input_ids, batch.attention_mask, batch.prefixes)

    def _upper(self, batch: TokenBatch, h: torch.Tensor, row_edit: torch.Tensor, shared: bool) -> torch.Tensor:
        """`shared`: rows with the same edit and a shared prefix (batch.prefixes) run the upper
        blocks over it once (SplitModel.upper); evaluation only (no autograd capture)."""
        if shared and batch.prefixes is not None:
            return self.split.upper(h, batch.attention_mask, batch.prefixes, batch.input_ids, row_edit)
        return self.split.upper(h, batch.attention_mask)

    def answer_logits(self, batch: TokenBatch, hidden: torch.Tensor | None = None,
                      edits: Edits | None = None, row_edit: torch.Tensor | None = None,
                      shared_upper: bool = False) -> torch.Tensor:
        """Logits at the answer positions of `batch` (n_sel, vocab), with edits applied if given."""
        h = self.lower(batch) if hidden is None else hidden
        row_edit = batch.row_edit if row_edit is None else row_edit
        ctx = patched(self.layers, edits, row_edit) if edits else contextlib.nullcontext()
        with ctx:
            final = self._upper(batch, h, row_edit, shared_upper)
        return self.split.logits(final, batch.answer_mask)

    def answer_logprobs(self, batch: TokenBatch, hidden: torch.Tensor | None = None, edits: Edits | None = None,
                        slice_tokens: int = 1024, shared_upper: bool = False) -> torch.Tensor:
        """Log-probability of each answer token (n_sel,), the LM head run `slice_tokens` positions
        at a time: never more than that many positions' vocabulary logits in memory."""
        h = self.lower(batch) if hidden is None else hidden
        ctx = patched(self.layers, edits, batch.row_edit) if edits else contextlib.nullcontext()
        with ctx:
            final = self._upper(batch, h, batch.row_edit, shared_upper)
        sel = final[batch.answer_mask.to(final.device)]
        ids = batch.answer_ids[batch.answer_mask].to(final.device)
        return torch.cat([losses.token_logprobs(self.split.logits(sel[i: i + slice_tokens]), ids[i: i + slice_tokens])
                          for i in range(0, len(sel), slice_tokens)]) if len(sel) else sel.new_zeros(0)

    def answer_nll(self, batch: TokenBatch, hidden: torch.Tensor | None = None,
                   edits: Edits | None = None) -> torch.Tensor:
        """Per row of `batch`, the mean NLL of its answer tokens (with edits applied if given)."""
        logits = self.answer_logits(batch, hidden, edits)
        return losses.nll(logits, batch.answer_ids[batch.answer_mask], losses.answer_rows(batch.answer_mask),
                          len(batch))

    def edit_gradients(self, batch: TokenBatch, hidden: torch.Tensor | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Per-token layer inputs u and output gradients d of the edit loss (row r = edit r)."""
        h = self.lower(batch) if hidden is None else hidden
        with torch.enable_grad(), capture(self.layers) as cap:
            per_row = self.answer_nll(batch, h)
            # Sum over rows: each row's gradient is the gradient of its own mean loss.
            grads = torch.autograd.grad(per_row.sum(), [cap.delta[n] for n in self.names])
        d = {n: g.detach() for n, g in zip(self.names, grads)}
        return cap.u, d, per_row.detach()

    def apply(self, edits: Edits, which: list[int] | None = None) -> AppliedEdits:
        return apply_edits(self.model, self.layers, edits, which)


def no_edits(batch: TokenBatch, hidden: torch.Tensor) -> None:
    """The `make_edits` of the unedited model (pre-edit rows): no edit at all."""


# ---------------------------------------------------------------------------------- dense apply
class AppliedEdits:
    """Edits summed into a model's weights; revert() restores the saved originals exactly."""

    def __init__(self, originals: dict[str, torch.Tensor], layers: dict[str, nn.Module]):
        self._originals = originals
        self._layers = layers
        self.active = True

    def revert(self) -> None:
        if not self.active:
            return
        with torch.no_grad():
            for n, w in self._originals.items():
                self._layers[n].weight.copy_(w)
        self.active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


@torch.no_grad()
def apply_edits(model: nn.Module, layers: dict[str, nn.Module], edits: Edits,
                which: list[int] | None = None) -> AppliedEdits:
    originals = {}
    for n, e in edits.items():
        mod = layers[n]
        if which is not None:
            e = LowRankEdit(e.U[which], e.D[which])
        dw = e.dense().to(mod.weight.dtype)
        originals[n] = mod.weight.detach().clone()
        mod.weight.add_(dw.T if is_transposed(mod) else dw)
    return AppliedEdits(originals, layers)


def edits_digest(edits: Edits) -> str:
    h = hashlib.sha256()
    for n in sorted(edits):
        h.update(edits[n].dense().detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]

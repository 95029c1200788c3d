"""FT-L: fine-tune the edited weights on each edit independently, with a norm bound.

The baseline of the InstructEdit and ROME papers, evaluated through the same interface as MEND:
`ftl_edits(editor, cfg)` is a `make_edits` function for `evaluate.core.evaluate_batch`, and it
returns the same `dict[name, LowRankEdit]` factors.

All B edits of a batch are fine-tuned at once and stay independent: step k captures, with the
accumulated edit of each row patched in, the per-token layer inputs u and output gradients d of
that row's own edit NLL. The gradient of W for edit e is sum_t d_t u_t^T, so a plain gradient step
appends the factors (U <- [U; u], D <- [D; -lr d]) and the accumulated update stays low-rank
(rank <= steps x tokens) without a dense copy of W per edit. After every step the update of each
edit and weight is projected onto the Frobenius ball ||D_e^T U_e||_F <= norm_bound, computed from
the Gram matrices as sum((U_e U_e^T) * (D_e D_e^T)) and enforced by rescaling D_e.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .hooks import LowRankEdit, patched

if TYPE_CHECKING:
    from ..data.batches import TokenBatch
    from .editable import EditableModel, Edits


@dataclass(frozen=True)
class FTLConfig:
    steps: int = 10  # gradient steps per edit
    lr: float = 1e-2  # SGD step size on the edited weights
    norm_bound: float = 1.0  # max Frobenius norm of each edit's update, per edited weight

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or self.norm_bound <= 0:
            raise ValueError(f"FT-L needs steps >= 1, lr > 0 and norm_bound > 0, got {self}")


def update_norms(edit: LowRankEdit) -> torch.Tensor:
    """||D_e^T U_e||_F per edit, from (U U^T) * (D D^T): never forms the (out x in) update."""
    uu = torch.bmm(edit.U, edit.U.transpose(1, 2))
    dd = torch.bmm(edit.D, edit.D.transpose(1, 2))
    return (uu * dd).sum((1, 2)).clamp(min=0).sqrt()


def project(edit: LowRankEdit, bound: float) -> LowRankEdit:
    """Rescale D_e of every edit whose update exceeds the bound onto the bound."""
    norms = update_norms(edit)
    scale = (bound / norms.clamp(min=1e-30)).clamp(max=1.0)
    return LowRankEdit(U=edit.U, D=edit.D * scale[:, None, None].to(edit.D.dtype))


def ftl_fit(editor: EditableModel, batch: TokenBatch, hidden: torch.Tensor, cfg: FTLConfig,
            history: list[torch.Tensor] | None = None) -> Edits:
    """Fine-tune one independent update per row of `batch`; returns the low-rank factors.

    `history`, if given, receives the per-row edit loss before every step and after the last one.
    """
    names = editor.names
    n = len(batch)
    row_edit = torch.arange(n, device=hidden.device)
    tok_mask = batch.attention_mask[..., None].to(hidden.dtype)
    acc: dict[str, LowRankEdit] = {}
    for _ in range(cfg.steps):
        with patched(editor.layers, acc, row_edit) if acc else contextlib.nullcontext():
            u, d, loss = editor.edit_gradients(batch, hidden)
        if history is not None:
            history.append(loss)
        for name in names:
            new_u = u[name] * tok_mask  # pad slots add nothing (d is zero there too)
            new_d = -cfg.lr * d[name]
            if name in acc:
                new_u = torch.cat([acc[name].U, new_u], 1)
                new_d = torch.cat([acc[name].D, new_d], 1)
            acc[name] = project(LowRankEdit(U=new_u, D=new_d), cfg.norm_bound)
    if history is not None:
        with patched(editor.layers, acc, row_edit):
            history.append(editor.edit_gradients(batch, hidden)[2])
    return acc


def ftl_edits(editor: EditableModel, cfg: FTLConfig | None = None) -> Callable[[TokenBatch, torch.Tensor], Edits]:
    """A `make_edits` for `evaluate_batch`: FT-L on every edit of the batch, independently."""
    cfg = cfg or FTLConfig()

    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        return ftl_fit(editor, batch, hidden, cfg)

    return make



def build(loaded, hp: FTLConfig):
    """-> (editable model, make_edits): FT-L on the model YAML's edited weights (MEND's)."""
    from .editable import EditableModel

    em = EditableModel(loaded)
    return em, ftl_edits(em, hp)

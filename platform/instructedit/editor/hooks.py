"""Forward hooks on the edited weights.

`capture`: records each edited layer's per-token input u and adds a zero leaf tensor to its
output; the gradient of the edit loss w.r.t. that leaf is exactly the output gradient d. So the
base model needs no parameter with requires_grad, autograd never forms a dense weight gradient,
and the backward pass stops at the lowest edited layer (nothing below it requires grad). The
rank-1 gradients d_t u_t^T summed over tokens equal the weight gradient (tested against autograd).

`patched`: adds an edit's low-rank update to each edited layer's output. Row r of the batch gets
edit row_edit[r]: y_r = W x_r + b + (x_r U_e^T) D_e with e = row_edit[r], where D_e already carries
the step size and sign (dW_e = D_e^T U_e, shape out x in). Linear and GPT-2 Conv1D give the same
math on activations; only a dense apply needs to know that Conv1D stores W transposed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Captured:
    u: dict[str, torch.Tensor]  # name -> (N, L, in) layer inputs
    delta: dict[str, torch.Tensor]  # name -> (N, L, out) zero leaves; their .grad / autograd.grad = d


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module]) -> Iterator[Captured]:
    cap = Captured({}, {})
    handles = []

    def make_hook(name):
        def hook(_mod, args, output):
            cap.u[name] = args[0].detach()
            leaf = torch.zeros_like(output, requires_grad=True)
            cap.delta[name] = leaf
            return output + leaf

        return hook

    for name, mod in modules.items():
        handles.append(mod.register_forward_hook(make_hook(name)))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


@dataclass
class LowRankEdit:
    """Per-edit factors of one weight: dW_e = D[e]^T U[e] (out x in), with padded token slots."""

    U: torch.Tensor  # (E, T, in)
    D: torch.Tensor  # (E, T, out)

    def dense(self) -> torch.Tensor:
        """The summed update over all edits (out x in): for applying edits to a plain model."""
        return torch.einsum("eto,eti->oi", self.D, self.U)


_ROWS: list[torch.Tensor] = []  # rows_of(): the rows of the patched batch a forward runs, innermost last


@contextlib.contextmanager
def rows_of(index: torch.Tensor) -> Iterator[None]:
    """Inside, a forward under `patched` runs rows `index` of the patched batch, in that order (row
    j of the forward gets edit row_edit[index[j]]): SplitModel.upper runs a batch's shared prefixes
    and its groups of rows as forwards of their own."""
    _ROWS.append(index)
    try:
        yield
    finally:
        _ROWS.pop()


@contextlib.contextmanager
def patched(
    modules: dict[str, nn.Module], edits: dict[str, LowRankEdit], row_edit: torch.Tensor
) -> Iterator[None]:
    handles = []

    def make_hook(name):
        e = edits[name]
        U = e.U.index_select(0, row_edit)  # (N, T, in)
        D = e.D.index_select(0, row_edit)  # (N, T, out)

        def hook(_mod, args, output):
            x = args[0]
            u, d = (U, D) if not _ROWS else (U.index_select(0, _ROWS[-1]), D.index_select(0, _ROWS[-1]))
            return output + torch.bmm(torch.bmm(x, u.transpose(1, 2)), d)

        return hook

    for name, mod in modules.items():
        if name in edits:
            handles.append(mod.register_forward_hook(make_hook(name)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def is_transposed(module: nn.Module) -> bool:
    """GPT-2's Conv1D stores its weight as (in, out); nn.Linear as (out, in)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def weight_shape(module: nn.Module) -> tuple[int, int]:
    """(out, in) in the logical orientation, whatever the storage."""
    w = module.weight
    return (w.shape[1], w.shape[0]) if is_transposed(module) else (w.shape[0], w.shape[1])

"""MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer"): facts written into the MLP
output projections of several consecutive layers, many facts in one closed-form update.

For a batch of facts: z_i, the residual stream after the last edited layer at fact i's lookup
position, is optimised as ROME's v* is (editor/locate.py, delta added to that layer's MLP output,
which is the block's residual output shifted by delta). Then layer by layer, lowest first, with the
updates of the layers below already in place: k_i = the layer's key at the lookup position,
h_i = the current residual stream after the last layer, r_i = (z_i - h_i) / (layers left), and

    dW = R K^T (lambda C + K K^T)^-1        (K: keys as columns, R: residuals, C = E[k k^T])

which minimises ||(W + dW) K - (W K + R)||^2 + lambda tr(dW C dW^T): the new facts' values and the
preservation of ordinary keys, weighed by lambda (mom2_weight). As factors: dW = sum_i r_i m_i^T
with m_i the columns of (lambda C + K K^T)^-1 K, one edit holding every fact (joint=True).

Evaluated as independent edits, each fact is its own batch of one; the rows of a batch are then
B separate single-fact updates, with m_i = S k_i / (1 + k_i^T S k_i), S = (lambda C)^-1 (Sherman-
Morrison: the B = 1 case of the formula above), run batched like every other method's edits.
`solve_rows` is the one place a method's closed form lives; AlphaEdit swaps in its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..data.batches import TokenBatch
from ..models import LoadedModel, get_module
from .editable import EditableModel, Edits, LowRankEdit
from .hooks import patched
from .key_stats import KeyStats, KeyStatsConfig, key_stats
from .locate import TargetConfig, optimise_value, recorded, subject_positions

# (layer name, keys (N, in), joint) -> rows m_i (N, in) with dW = sum_i r_i m_i^T
SolveRows = Callable[[str, torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class MEMITConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    stats: KeyStatsConfig = field(default_factory=KeyStatsConfig)
    mom2_weight: float = 15000.0  # lambda: how strongly ordinary keys keep their values
    layers: tuple[int, ...] = ()  # () = the model YAML's memit_layers

    def __post_init__(self):
        if self.mom2_weight <= 0:
            raise ValueError(f"mom2_weight must be > 0, got {self.mom2_weight}")


def memit_editable(loaded: LoadedModel, layers: tuple[int, ...] = ()) -> EditableModel:
    cfg = loaded.config
    layers = tuple(layers) or tuple(cfg.memit_layers)
    if not layers or not cfg.mlp_out:
        raise ValueError(f"model {cfg.name}: MEMIT and AlphaEdit need memit_layers and mlp_out in its model YAML")
    return EditableModel(loaded, layers=layers, weights=[cfg.mlp_out])


def layer_stats(em: EditableModel, cfg: KeyStatsConfig) -> dict[str, KeyStats]:
    return key_stats(em.loaded, em.names, max(em.layer_indices), cfg)


def memit_solver(stats: dict[str, KeyStats], mom2_weight: float, device) -> SolveRows:
    """MEMIT's rows m_i: joint (lambda C + K K^T)^-1 K, or per fact S k / (1 + k^T S k)."""
    lam_c = {n: (mom2_weight * s.mom2).to(device) for n, s in stats.items()}
    chol = {}
    for n, a in lam_c.items():
        try:
            chol[n] = torch.linalg.cholesky(a)
        except torch.linalg.LinAlgError:
            raise ValueError(f"{n}: key covariance from {stats[n].count} tokens is singular for keys of width "
                             f"{a.shape[0]}; give more text (key statistics max_texts or a larger file)") from None

    def rows(name: str, keys: torch.Tensor, joint: bool) -> torch.Tensor:
        k = keys.to(torch.float64)
        if joint:
            return torch.linalg.solve(lam_c[name] + k.T @ k, k.T).T
        sk = torch.cholesky_solve(k.T, chol[name]).T  # (lambda C)^-1 k, per row
        return sk / (1.0 + (k * sk).sum(1, keepdim=True))

    return rows


def memit_fit(em: EditableModel, batch: TokenBatch, hidden: torch.Tensor, target: TargetConfig,
              solve_rows: SolveRows, joint: bool = False, trace: list[dict] | None = None) -> Edits:
    """The edits of every layer for the facts of `batch`: one edit per row (joint=False) or one edit
    holding all rows (joint=True). `trace`, if given, receives each layer's keys and residuals."""
    names = em.names
    last_block = get_module(em.model, f"{em.model_cfg.blocks}.{em.layer_indices[-1]}")
    pos = subject_positions(em.tokenizer, batch)
    delta, _, _ = optimise_value(em, batch, hidden, pos, names[-1], target)
    n = len(batch)
    row_edit = (torch.zeros(n, dtype=torch.long) if joint else torch.arange(n)).to(hidden.device)
    edits: Edits = {}
    z = None
    for i, name in enumerate(names):
        ctx = patched(em.layers, edits, row_edit) if edits else contextlib.nullcontext()
        with torch.no_grad(), ctx, recorded({name: em.layers[name]}, pos, inputs=True) as k, \
                recorded({"out": last_block}, pos, inputs=False) as h:
            em.split.upper(hidden, batch.attention_mask)
        keys, cur = k[name], h["out"].to(torch.float64)
        if z is None:
            z = cur + delta.to(torch.float64)  # no layer is updated yet: cur is the unedited stream
        resid = (z - cur) / (len(names) - i)  # spread what is left over the layers left
        m = solve_rows(name, keys, joint)
        dtype = em.layers[name].weight.dtype
        if joint:
            edits[name] = LowRankEdit(U=m[None].to(dtype), D=resid[None].to(dtype))
        else:
            edits[name] = LowRankEdit(U=m[:, None].to(dtype), D=resid[:, None].to(dtype))
        if trace is not None:
            trace.append({"name": name, "keys": keys.to(torch.float64), "resid": resid})
    return edits


def build(loaded: LoadedModel, hp: MEMITConfig):
    """-> (editable model, make_edits) for evaluate.core.evaluate_batch (independent edits)."""
    em = memit_editable(loaded, hp.layers)
    solve = memit_solver(layer_stats(em, hp.stats), hp.mom2_weight, em.device)

    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        return memit_fit(em, batch, hidden, hp.target, solve)

    return em, make

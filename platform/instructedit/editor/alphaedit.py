"""AlphaEdit (Fang et al. 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language
Models"): MEMIT's layer-by-layer update, projected onto the null space of the preserved keys.

K0 K0^T is the preserved keys' second moment (editor/key_stats.py, the same statistics MEMIT
uses); its eigenvectors with eigenvalue below `nullspace_threshold` span (numerically) the
directions no preserved key occupies, and P = U^ U^^T projects onto them. Any update of the form
dW P leaves W K0 unchanged. Instead of trading new facts against preserved ones with lambda C,
the update solves

    min ||(W + dW P) K - (W K + R)||^2 + l2 ||dW P||^2   ->   dW P = R K^T P (K K^T P + l2 I)^-1

(the paper's closed form without earlier edits' keys: every evaluated edit starts from the
unedited model). As factors, dW P = sum_i r_i m_i^T with m_i the columns of
(P K K^T + l2 I)^-1 P K; per single fact m = P k / (l2 + k^T P k). Everything else - lookup
position, z optimisation, residual spreading over layers - is MEMIT's (editor/memit.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.batches import TokenBatch
from ..models import LoadedModel
from .editable import Edits
from .key_stats import KeyStats, KeyStatsConfig
from .locate import TargetConfig
from .memit import SolveRows, layer_stats, memit_editable, memit_fit


@dataclass(frozen=True)
class AlphaEditConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    stats: KeyStatsConfig = field(default_factory=KeyStatsConfig)
    nullspace_threshold: float = 1e-2  # eigenvalues of E[k0 k0^T] below this span the null space
    l2: float = 1.0  # weight of ||dW P||^2 (the paper's identity term)
    layers: tuple[int, ...] = ()  # () = the model YAML's memit_layers

    def __post_init__(self):
        if self.nullspace_threshold <= 0 or self.l2 <= 0:
            raise ValueError(f"AlphaEdit needs nullspace_threshold > 0 and l2 > 0, got {self}")


def null_space_projection(mom2: torch.Tensor, threshold: float, name: str = "") -> torch.Tensor:
    """P = U^ U^^T over the eigenvectors of K0 K0^T whose eigenvalue is below `threshold`."""
    evals, evecs = torch.linalg.eigh(mom2.to(torch.float64))
    keep = evecs[:, evals < threshold]
    if keep.shape[1] == 0:
        raise ValueError(f"{name}: no eigenvalue of the preserved keys' second moment is below "
                         f"nullspace_threshold {threshold} (smallest {float(evals[0]):.3g}): the null space "
                         f"is empty and AlphaEdit could not edit; raise the threshold")
    return keep @ keep.T


def alphaedit_solver(stats: dict[str, KeyStats], threshold: float, l2: float, device) -> SolveRows:
    proj = {n: null_space_projection(s.mom2, threshold, n).to(device) for n, s in stats.items()}

    def rows(name: str, keys: torch.Tensor, joint: bool) -> torch.Tensor:
        k = keys.to(torch.float64)
        p = proj[name]
        if joint:
            kc = k.T  # keys as columns
            eye = torch.eye(p.shape[0], dtype=p.dtype, device=p.device)
            return torch.linalg.solve(p @ kc @ kc.T + l2 * eye, p @ kc).T
        pk = k @ p  # P is symmetric
        return pk / (l2 + (k * pk).sum(1, keepdim=True))

    return rows


def build(loaded: LoadedModel, hp: AlphaEditConfig):
    """-> (editable model, make_edits) for evaluate.core.evaluate_batch (independent edits)."""
    em = memit_editable(loaded, hp.layers)
    solve = alphaedit_solver(layer_stats(em, hp.stats), hp.nullspace_threshold, hp.l2, em.device)

    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        return memit_fit(em, batch, hidden, hp.target, solve)

    return em, make

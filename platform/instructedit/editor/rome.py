"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): one rank-one update
of one MLP output projection per fact.

The projection W maps a key k (the MLP's hidden activation) to a value v. For a fact, k* is the
key at the subject's last token and v* = W k* + b + delta the value found by optimisation
(editor/locate.py). With C = E[k k^T] over ordinary text (editor/key_stats.py), the smallest change
of W in the C-weighted sense that maps k* to v* is the rank-one

    dW = (v* - W k* - b) (C^-1 k*)^T / (k*^T C^-1 k*)

so W' k* + b = v* exactly. As factors: U = C^-1 k* / (k*^T C^-1 k*) and D = delta (T = 1), run
batched through the patched forward and `apply` like every other method's edits. The layer and
the projection come from the model YAML (rome_layer, mlp_out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.batches import TokenBatch
from ..models import LoadedModel
from .editable import EditableModel, Edits, LowRankEdit
from .key_stats import KeyStatsConfig, key_stats
from .locate import TargetConfig, optimise_value, subject_positions


@dataclass(frozen=True)
class ROMEConfig:
    target: TargetConfig = field(default_factory=TargetConfig)
    stats: KeyStatsConfig = field(default_factory=KeyStatsConfig)
    layer: int | None = None  # None = the model YAML's rome_layer


def rome_editable(loaded: LoadedModel, layer: int | None = None) -> EditableModel:
    cfg = loaded.config
    layer = cfg.rome_layer if layer is None else layer
    if layer is None or not cfg.mlp_out:
        raise ValueError(f"model {cfg.name}: ROME needs rome_layer and mlp_out in its model YAML")
    return EditableModel(loaded, layers=[layer], weights=[cfg.mlp_out])


def inverse_covariance(mom2: torch.Tensor, name: str, count: int) -> torch.Tensor:
    """C^-1 in float64; a singular C (too little text for the key width) is an error that says so."""
    try:
        chol = torch.linalg.cholesky(mom2)
    except torch.linalg.LinAlgError:
        raise ValueError(f"{name}: key covariance from {count} tokens is singular for keys of width "
                         f"{mom2.shape[0]}; give more text (key statistics max_texts or a larger file)") from None
    return torch.cholesky_inverse(chol)


def rome_factors(key: torch.Tensor, delta: torch.Tensor, c_inv: torch.Tensor) -> LowRankEdit:
    """Per-row rank-one factors: U = C^-1 k / (k^T C^-1 k), D = delta."""
    k = key.to(torch.float64)
    ck = k @ c_inv  # C^-1 is symmetric
    u = ck / (k * ck).sum(1, keepdim=True)
    return LowRankEdit(U=u.to(key.dtype)[:, None, :], D=delta[:, None, :])


def build(loaded: LoadedModel, hp: ROMEConfig):
    """-> (editable model, make_edits) for evaluate.core.evaluate_batch."""
    em = rome_editable(loaded, hp.layer)
    name = em.names[0]
    stats = key_stats(loaded, [name], em.layer_indices[0], hp.stats)[name]
    c_inv = inverse_covariance(stats.mom2, name, stats.count).to(em.device)

    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        pos = subject_positions(em.tokenizer, batch)
        delta, key, _ = optimise_value(em, batch, hidden, pos, name, hp.target)
        return {name: rome_factors(key, delta, c_inv)}

    return em, make

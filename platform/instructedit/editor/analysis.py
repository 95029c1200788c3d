"""Transformed editing gradients, for the PCA analysis of how instructions steer edit directions.

For each record the editor computes its edit; the feature is the edit's update of every weight in
the top edited block, dW = D^T U, seen through a fixed random projection (Johnson-Lindenstrauss:
distances, hence principal components, are preserved) so features stay small: out x k per weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.batches import edit_batch
from .mend import MendEditor


@torch.no_grad()
def edit_features(editor: MendEditor, records, batch_size: int = 16, k: int = 4, seed: int = 0,
                  max_length: int = 128) -> np.ndarray:
    top = max(editor.names, key=lambda n: [int(p) for p in n.split(".") if p.isdigit()] or [0])
    prefix = top.rsplit(".", 1)[0]
    names = [n for n in editor.names if n.rsplit(".", 1)[0] == prefix]
    gen = torch.Generator().manual_seed(seed)
    proj = {n: torch.randn(editor.edits_in_dim(n), k, generator=gen) / k**0.5 for n in names}
    feats = []
    editor.eval()
    for i in range(0, len(records), batch_size):
        batch = edit_batch(records[i : i + batch_size], editor.tokenizer, max_length).to(editor.device)
        u, d, _ = editor.edit_gradients(batch)
        edits = editor.transform(u, d, editor.edit_token_mask(batch))
        parts = []
        for n in names:
            e = edits[n]
            ur = torch.einsum("eti,ik->etk", e.U, proj[n].to(e.U))  # (E, T, k)
            parts.append(torch.einsum("eto,etk->eok", e.D, ur).flatten(1))  # D^T U R, per edit
        feats.append(torch.cat(parts, dim=1).cpu())
    return torch.cat(feats).numpy()


def collect_transformed_gradients(checkpoint_path: str | Path, records) -> tuple[np.ndarray, list[str]]:
    """(n_records, dim) features of the editor's transformed gradients and each record's task."""
    editor = MendEditor.from_checkpoint(checkpoint_path).eval()
    return edit_features(editor, list(records)), [r.task for r in records]

"""Rows of token ids as one right-padded batch, for the shared-prefix tests of SplitModel."""

import torch


def right_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (input_ids, attention_mask), zero-padded on the right to the longest row."""
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
    return ids, att

"""Rows packed through the upper blocks (editor/packed.py): the same final states as the padded
batch, across packs, and a stamp that a changed lower weight (only) changes."""

import pytest
import torch
from instructedit.editor import packed
from instructedit.editor.split import SplitModel
from instructedit.models import build_model


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def split(request):
    loaded = build_model(request.param)
    n = len(SplitModel(loaded.model, loaded.config, 1).blocks)
    return SplitModel(loaded.model, loaded.config, n - 1)


def _batch():
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(5, 100, (n,), generator=g) for n in (19, 15, 5, 11, 1)]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        att[i, : len(r)] = 1
    return rows, ids, att


@pytest.mark.parametrize("limit", [packed.PACK_TOKENS, 12])  # 12: several packs, two rows too long for one
def test_packed_rows_match_the_padded_batch(split, limit, monkeypatch):
    monkeypatch.setattr(packed, "PACK_TOKENS", limit)
    rows, ids, att = _batch()
    with torch.no_grad():
        lower = split.lower(ids, att)
        ref = split.upper(lower, att)
        got = packed.upper_packed(split, [lower[i, : len(r)] for i, r in enumerate(rows)])
    assert [g.shape[0] for g in got] == [len(r) for r in rows]
    assert max(float((g - ref[i, : len(r)]).abs().max()) for i, (g, r) in enumerate(zip(got, rows))) < 1e-5


def test_chunks_and_layout():
    assert packed.chunks([5, 4, 9, 3, 1], limit=9) == [[0, 1], [2], [3, 4]]
    pos, mask = packed.pack_layout([2, 3], torch.float32, "cpu")
    assert pos.tolist() == [[0, 1, 0, 1, 2]]
    assert (mask[0, 0] == 0).int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0],
                                                [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def test_the_stamp_changes_with_a_lower_weight_only(split):
    stamp = packed.lower_stamp(split)
    with torch.no_grad():
        for p in split.blocks[-1].parameters():  # above the split: the edited blocks
            p.add_(0)
    assert packed.lower_stamp(split) == stamp
    with torch.no_grad():
        next(split.blocks[0].parameters()).add_(0)  # in place below the split, even a no-op
    assert packed.lower_stamp(split) != stamp

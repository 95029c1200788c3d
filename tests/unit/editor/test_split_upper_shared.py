"""Shared prefixes through the upper blocks (SplitModel.upper(prefixes=, input_ids=, row_edit=)) and
the length groups of rows continuing a prefix (tail_groups): the same final states as the padded
batch, with and without per-row edits patched in."""

import pytest
import torch
from instructedit.editor.hooks import LowRankEdit, patched
from instructedit.editor.split import SplitModel, tail_groups
from instructedit.models import build_model
from token_rows import right_padded

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def split(request):
    loaded = build_model(request.param)
    n = len(SplitModel(loaded.model, loaded.config, 1).blocks)
    return SplitModel(loaded.model, loaded.config, n - 2)


def _batch():
    g = torch.Generator().manual_seed(0)
    instr = torch.randint(5, 100, (12,), generator=g).tolist()
    prompt = torch.randint(5, 100, (7,), generator=g).tolist()
    other = torch.randint(5, 100, (4,), generator=g).tolist()
    rows = [instr + prompt + [1, 2, 3], instr + prompt + [4, 5], instr + [9, 8, 7, 6, 5, 4], [11, 12, 13],
            instr + prompt + [7] * 9, instr + prompt + [6, 6], other + [1, 2], other + [3], [3] * 5 + instr]
    cuts = [(12, 19), (12, 19), (12,), (), (12, 19), (12, 19), (4,), (4,), (5,)]
    # rows 0, 1, 4 share edit 0 (instruction + prompt); row 5 has the same ids but edit 1; rows 6, 7
    # share a short prompt and edit 2; row 2 shares only the instruction, with edit 0
    row_edit = torch.tensor([0, 0, 0, 1, 0, 1, 2, 2, 3])
    ids, att = right_padded(rows)
    return rows, cuts, ids, att, row_edit


def _edits(split, scale):
    top = split.blocks[split.split_at + 1]
    layer = next(m for m in top.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    w = layer.weight
    d_in, d_out = (w.shape[1], w.shape[0]) if isinstance(layer, torch.nn.Linear) else (w.shape[0], w.shape[1])
    g = torch.Generator().manual_seed(1)
    return {"x": layer}, {"x": LowRankEdit(scale * torch.randn(4, 3, d_in, generator=g),
                                           torch.randn(4, 3, d_out, generator=g))}


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_shared_upper_equals_the_padded_batch(split, scale):
    rows, cuts, ids, att, row_edit = _batch()
    with torch.no_grad():
        h = split.lower(ids, att)
        layers, edits = _edits(split, scale)
        with patched(layers, edits, row_edit):
            want = split.upper(h, att)
            got = split.upper(h, att, cuts, ids, row_edit)
    for i, r in enumerate(rows):
        assert float((got[i, : len(r)] - want[i, : len(r)]).abs().max()) < 1e-5, i
    if scale:  # the edits matter: a row with another edit's prefix states would differ
        with torch.no_grad(), patched(layers, edits, torch.zeros_like(row_edit)):
            other = split.upper(h, att)
        assert float((other[5, :len(rows[5])] - want[5, :len(rows[5])]).abs().max()) > 1e-4


def test_no_shared_prefix_is_the_plain_pass(split):
    rows, _, ids, att, row_edit = _batch()
    with torch.no_grad():
        h = split.lower(ids, att)
        assert torch.equal(split.upper(h, att, [()] * len(rows), ids, row_edit), split.upper(h, att))
        lone = [(12,)] + [()] * (len(rows) - 1)  # a cut no other row shares
        assert torch.equal(split.upper(h, att, lone, ids, row_edit), split.upper(h, att))


def test_tail_groups_partition_and_cut_padding():
    lengths = [20, 21, 19, 50, 52, 3, 3, 3, 100, 20]
    groups = tail_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    assert padded < len(lengths) * max(lengths)
    assert tail_groups([7] * 5) == [[0, 1, 2, 3, 4]]  # equal lengths: one forward
    assert tail_groups([]) == []
    assert tail_groups([5, 6], call_tokens=1000) == [[0, 1]]  # overhead dearer than the padding

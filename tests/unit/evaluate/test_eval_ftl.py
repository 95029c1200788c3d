"""FT-L: raises the target probability, respects the norm bound, keeps edits independent and low-rank."""

import pytest
import torch
from eval_records import make_records
from instructedit.data.batches import edit_batch
from instructedit.editor.ftl import FTLConfig, ftl_edits, ftl_fit, project, update_norms
from instructedit.editor.hooks import LowRankEdit
from instructedit.evaluate.core import evaluate_batch


def test_update_norm_matches_dense():
    g = torch.Generator().manual_seed(0)
    e = LowRankEdit(U=torch.randn(3, 5, 7, generator=g), D=torch.randn(3, 5, 4, generator=g))
    dense = torch.einsum("eto,eti->eoi", e.D, e.U).flatten(1).norm(dim=1)
    assert torch.allclose(update_norms(e), dense, rtol=1e-4)
    p = project(e, 1.0)
    assert torch.allclose(update_norms(p), torch.ones(3), rtol=1e-4)
    assert torch.equal(project(e, 1e9).D, e.D)


def test_ftl_raises_target_probability_within_bound(tiny_editor):
    recs = make_records(3, 7)
    eb = edit_batch(recs, tiny_editor.tokenizer, 48)
    h = tiny_editor.lower(eb)
    hist: list = []
    edits = ftl_fit(tiny_editor, eb, h, FTLConfig(steps=5, lr=0.3, norm_bound=100.0), hist)
    assert (hist[-1] < hist[0] - 0.2).all(), (hist[0], hist[-1])  # NLL of every edit falls
    for e in edits.values():
        assert e.U.shape[1] == 5 * eb.input_ids.shape[1]  # rank grows by one token block per step

    bound = 0.05
    tight: list = []
    edits = ftl_fit(tiny_editor, eb, h, FTLConfig(steps=5, lr=0.3, norm_bound=bound), tight)
    for e in edits.values():
        dense = torch.einsum("eto,eti->eoi", e.D, e.U).flatten(1).norm(dim=1)
        assert (dense <= bound * (1 + 1e-3)).all()
    assert (tight[-1] < tight[0]).all() and (tight[-1] > hist[-1]).all()  # the bound binds


def test_ftl_edits_are_independent(tiny_editor):
    """Each edit in a batch equals the same edit fitted alone."""
    recs = make_records(3, 8)
    cfg = FTLConfig(steps=3, lr=0.5, norm_bound=1.0)
    together = evaluate_batch(tiny_editor, recs, ftl_edits(tiny_editor, cfg), 48)
    alone = [evaluate_batch(tiny_editor, [r], ftl_edits(tiny_editor, cfg), 48)[0] for r in recs]
    for a, b in zip(together, alone):
        for k, v in b.items():
            assert a[k] == (pytest.approx(v, abs=1e-5) if isinstance(v, float) else v), k

"""AlphaEdit: the update leaves the preserved keys' outputs unchanged and still writes the fact."""

import pytest
import torch
from editor_facts import fact_batch
from instructedit.editor import methods
from instructedit.editor.alphaedit import alphaedit_solver, null_space_projection
from instructedit.editor.memit import layer_stats, memit_fit

PRESERVED = ["The cat sat on the mat.", "Paris is a city.", "Rivers run to the sea.", "Two and two is four."]


def test_projection_is_onto_the_small_eigenvalue_directions():
    g = torch.Generator().manual_seed(0)
    k0 = torch.randn(6, 10, generator=g, dtype=torch.float64)  # 6 keys span 6 of 10 directions
    p = null_space_projection(k0.T @ k0 / 6, 1e-9)
    torch.testing.assert_close(p @ p, p)
    torch.testing.assert_close(p, p.T)
    assert abs(torch.trace(p).item() - 4) < 1e-9
    torch.testing.assert_close(k0 @ p, torch.zeros_like(k0), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="null space is empty"):
        null_space_projection(torch.eye(3, dtype=torch.float64), 0.5)


def _keys_of(em, name, texts):
    keys = []
    h = em.layers[name].register_forward_hook(lambda _m, a, _o: keys.append(a[0][0].double()))
    try:
        with torch.no_grad():
            for t in texts:
                em.model(**em.tokenizer(t, return_tensors="pt"))
    finally:
        h.remove()
    return torch.cat(keys)


@pytest.mark.parametrize("joint", [False, True])
def test_update_leaves_preserved_keys_outputs_unchanged(llama, tmp_path, key_cache, joint):
    """Preserved keys K0 = every token of four sentences (fewer than the key width, so their null
    space is exact): after the edit W' K0 = W K0, while the edited facts' keys do move."""
    text = tmp_path / "preserved.txt"
    text.write_text("\n".join(PRESERVED) + "\n")
    m = methods.get("alphaedit")
    hp = m.load_hparams("tiny-llama", {"stats": {"text_file": str(text)}, "nullspace_threshold": 1e-12})
    em, make = m.load(llama, hparams=hp)
    stats = layer_stats(em, hp.stats)
    b = fact_batch(llama.tokenizer, 3)
    h = em.lower(b)
    if joint:
        edits = memit_fit(em, b, h, hp.target, alphaedit_solver(stats, hp.nullspace_threshold, hp.l2, "cpu"), joint=True)
    else:
        edits = make(b, h)
    for name in em.names:
        k0 = _keys_of(em, name, PRESERVED)
        assert k0.shape[0] < k0.shape[1]
        dw = edits[name].dense().to(torch.float64)
        moved = dw @ k0.T  # W' K0 - W K0
        assert moved.norm() < 1e-7 * dw.norm() * k0.norm()
        assert dw.norm() > 0
    with torch.no_grad():  # while the facts' own predictions do change
        pre = em.answer_logits(b, h)
        post = em.answer_logits(b, h, edits, row_edit=torch.zeros(3, dtype=torch.long) if joint else None)
    assert not torch.allclose(pre, post)


def test_with_full_rank_statistics_preserved_outputs_move_less_than_the_threshold(llama, stats_text, key_cache):
    """With the usual (full-rank) statistics the null space is approximate, and the guarantee is a
    bound: over the preserved tokens, mean ||dW k0||^2 = tr(dW C dW^T) <= threshold ||dW||_F^2."""
    m = methods.get("alphaedit")
    hp = m.load_hparams("tiny-llama", {"stats": {"text_file": stats_text}})
    em, make = m.load(llama, hparams=hp)
    stats = layer_stats(em, hp.stats)
    b = fact_batch(llama.tokenizer, 3)
    edits = make(b, em.lower(b))
    for name in em.names:
        c = stats[name].mom2
        for e in range(3):
            dw = (edits[name].D[e].T @ edits[name].U[e]).to(torch.float64)
            assert torch.trace(dw @ c @ dw.T) <= hp.nullspace_threshold * (dw**2).sum() * (1 + 1e-6)
            assert (dw**2).sum() > 0

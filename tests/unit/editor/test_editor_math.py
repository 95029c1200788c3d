"""Correctness of the editor against autograd and against the plain model, for both families."""

import pytest
import torch
from instructedit.config import EditorConfig
from instructedit.data.batches import encode_pairs
from instructedit.editor.hooks import is_transposed
from instructedit.editor.mend import MendEditor
from instructedit.models import build_model

FAMILIES = ["tiny-llama", "tiny-gpt2"]
PROMPTS = ["The capital of Freedonia is", "Alice works as a", "The Eiffel tower stands in the city of"]
TARGETS = ["Sylvania", "pilot", "Rome"]


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request):
    return build_model(request.param)


def make_batch(tok, prompts=PROMPTS, targets=TARGETS):
    return encode_pairs(tok, prompts, targets, row_edit=list(range(len(prompts))))


def make_editor(loaded, **kw):
    torch.manual_seed(0)
    ed = MendEditor(loaded, EditorConfig(rank=32, **kw))
    ed.eval()
    return ed


def test_lower_upper_equals_full_forward(loaded):
    ed = make_editor(loaded)
    b = make_batch(loaded.tokenizer)
    full = loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    with torch.no_grad():
        h = ed.lower(b)
        final = ed.split.upper(h, b.attention_mask)
        split_logits = ed.split.logits(final)
    mask = b.attention_mask.bool()
    torch.testing.assert_close(split_logits[mask], full[mask], atol=1e-5, rtol=1e-5)


def test_rank1_sum_equals_autograd_weight_grad(loaded):
    ed = make_editor(loaded)
    b = make_batch(loaded.tokenizer)
    u, d, _ = ed.edit_gradients(b)
    # autograd reference: the same loss with the edited weights requiring grad
    for n in ed.names:
        ed.layers[n].weight.requires_grad_(True)
    try:
        logits = loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        from instructedit.editor import losses

        rows = losses.answer_rows(b.answer_mask)
        loss = losses.nll(logits[b.answer_mask], b.answer_ids[b.answer_mask], rows, len(b)).sum()
        grads = torch.autograd.grad(loss, [ed.layers[n].weight for n in ed.names])
    finally:
        for n in ed.names:
            ed.layers[n].weight.requires_grad_(False)
    for n, g in zip(ed.names, grads):
        ours = torch.einsum("blo,bli->oi", d[n], u[n])
        ref = g.T if is_transposed(ed.layers[n]) else g
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)


def test_no_base_parameter_requires_grad(loaded):
    ed = make_editor(loaded)
    ed.edit(make_batch(loaded.tokenizer))
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert all(p.grad is None for p in loaded.model.parameters())


def test_identity_transform_is_plain_gradient_step(loaded):
    ed = make_editor(loaded, edit_lr=1e-2)
    b = make_batch(loaded.tokenizer)
    edits, _ = ed.edit(b)
    u, d, _ = ed.edit_gradients(b)
    for n in ed.names:
        for e in range(len(b)):
            step = -1e-2 * torch.einsum("lo,li->oi", d[n][e], u[n][e])
            dense = edits[n].D[e].T @ edits[n].U[e]
            torch.testing.assert_close(dense, step, atol=1e-7, rtol=1e-4)


def test_patched_equals_dense_apply_and_revert_is_exact(loaded):
    ed = make_editor(loaded, edit_lr=0.5)
    b = make_batch(loaded.tokenizer)
    edits, _ = ed.edit(b)
    before = {n: ed.layers[n].weight.detach().clone() for n in ed.names}
    logits_before = loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    for e in range(len(b)):
        row = b.select([e])
        with torch.no_grad():
            low_rank = ed.answer_logits(row, edits=edits, row_edit=torch.tensor([e]))
        handle = ed.apply(edits, which=[e])
        dense = loaded.model(input_ids=row.input_ids, attention_mask=row.attention_mask).logits[row.answer_mask]
        handle.revert()
        torch.testing.assert_close(low_rank, dense, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(low_rank, logits_before[e : e + 1, : row.answer_mask.shape[1]][row.answer_mask], atol=1e-3)
    for n in ed.names:
        assert torch.equal(ed.layers[n].weight, before[n])  # bit for bit
    after = loaded.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert torch.equal(after, logits_before)


def test_batched_edits_equal_one_at_a_time(loaded):
    ed = make_editor(loaded, edit_lr=0.5)
    b = make_batch(loaded.tokenizer)
    edits, _ = ed.edit(b)
    with torch.no_grad():
        batched = ed.answer_logits(b, edits=edits)
    singles = []
    for e in range(len(b)):
        one = make_batch(loaded.tokenizer, [PROMPTS[e]], [TARGETS[e]])
        ed1, _ = ed.edit(one)
        for n in ed.names:  # same factors (up to padding width)
            w = ed1[n].U.shape[1]
            torch.testing.assert_close(edits[n].U[e, :w], ed1[n].U[0], atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            singles.append(ed.answer_logits(one, edits=ed1))
    torch.testing.assert_close(batched, torch.cat(singles), atol=1e-4, rtol=1e-4)


def test_checkpoint_roundtrip_and_mismatch(tmp_path, loaded):
    ed = make_editor(loaded)
    with torch.no_grad():
        for p in ed.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = ed.save(tmp_path / "editor.pt")
    ed2 = MendEditor.from_checkpoint(path, loaded)
    for (k, v), (k2, v2) in zip(ed.state_dict().items(), ed2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = build_model("tiny-gpt2" if loaded.config.name == "tiny-llama" else "tiny-llama")
    with pytest.raises(ValueError, match="trained"):
        MendEditor.from_checkpoint(path, other)


def test_lower_cache_gives_same_hidden_states(loaded):
    ed = make_editor(loaded)
    b = make_batch(loaded.tokenizer)
    plain = ed.lower(b)
    ed.split.enable_cache(16)
    try:
        first = ed.lower(b.select([0, 2]))  # fills part of the cache
        mixed = ed.lower(b)  # hits for rows 0 and 2, computes row 1
        assert ed.split.cache_hits == 2 and ed.split.cache_misses == 3
        mask = b.attention_mask.bool()
        torch.testing.assert_close(mixed[mask], plain[mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(first[0][: int(b.attention_mask[0].sum())], plain[0][: int(b.attention_mask[0].sum())],
                                   atol=1e-5, rtol=1e-5)
    finally:
        ed.split._cache = None

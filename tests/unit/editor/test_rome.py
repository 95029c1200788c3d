"""ROME: the rank-one update maps the subject's key to the optimised value; edits stay independent;
the key statistics behind C are cached with their sample count."""

from pathlib import Path

import pytest
import torch
from editor_facts import fact_batch
from instructedit.editor import losses, methods
from instructedit.editor.key_stats import KeyStatsConfig, key_stats
from instructedit.editor.locate import optimise_value, recorded, subject_end, subject_positions
from instructedit.editor.rome import rome_editable


def rome_for(loaded, stats_text):
    m = methods.get("rome")
    hp = m.load_hparams(loaded.config.name, {"stats": {"text_file": stats_text}})
    em, make = m.load(loaded, hparams=hp)
    return em, make, hp


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: Conv1D stores W transposed
def test_rome_maps_the_subject_key_to_the_optimised_value(family, request, stats_text, key_cache):
    loaded = request.getfixturevalue(family)
    em, make, hp = rome_for(loaded, stats_text)
    name = em.names[0]
    assert name == loaded.config.mlp_out.format(i=loaded.config.rome_layer) and em.split.split_at == 1
    b = fact_batch(loaded.tokenizer)
    h = em.lower(b)
    pos = subject_positions(em.tokenizer, b)
    delta, key, v0 = optimise_value(em, b, h, pos, name, hp.target)
    edits = make(b, h)
    torch.testing.assert_close(edits[name].D[:, 0], delta)  # D is the optimised delta
    assert (delta.norm(dim=1) > 0).all()
    dw_k = (edits[name].U[:, 0] * key).sum(1, keepdim=True) * edits[name].D[:, 0]  # (D^T U) k*, per edit
    torch.testing.assert_close(dw_k, delta, atol=1e-6, rtol=1e-4)
    for e in range(len(b)):
        with em.apply(edits, which=[e]), torch.no_grad(), recorded({name: em.layers[name]}, pos, inputs=False) as out:
            em.split.upper(h, b.attention_mask)
        # W' k* + b = v* = W k* + b + delta: the edited weight gives the optimised value exactly
        torch.testing.assert_close(out[name][e], v0[e] + delta[e], atol=1e-5, rtol=1e-4)
    ids, rows = b.answer_ids[b.answer_mask], losses.answer_rows(b.answer_mask)
    with torch.no_grad():
        pre = losses.nll(em.answer_logits(b, h), ids, rows, len(b))
        post = losses.nll(em.answer_logits(b, h, edits), ids, rows, len(b))
    assert (post < pre).all()


def test_rome_edits_of_a_batch_equal_one_at_a_time(llama, stats_text, key_cache):
    em, make, _ = rome_for(llama, stats_text)
    b = fact_batch(llama.tokenizer)
    together = make(b, em.lower(b))
    for e in range(len(b)):
        one = b.select([e])
        alone = make(one, em.lower(one))
        for n in together:
            torch.testing.assert_close(together[n].U[e], alone[n].U[0], atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(together[n].D[e], alone[n].D[0], atol=1e-6, rtol=1e-4)


def test_subject_position_is_the_subjects_last_token(llama):
    tok = llama.tokenizer
    ids = tok("A story about Alice Smith today", add_special_tokens=True)["input_ids"]
    end = subject_end(tok, ids, "Alice Smith")
    assert tok.decode(ids[: end + 1], skip_special_tokens=True).endswith("Alice Smith")
    assert subject_end(tok, ids, "Bob") is None and subject_end(tok, ids, "") is None
    b = fact_batch(tok)
    b.meta[1]["subject"] = "nowhere in the prompt"
    pos = subject_positions(tok, b)
    assert pos[1] == b.answer_mask[1].int().argmax()  # falls back to the prompt's last token


def test_key_stats_are_cached_with_their_count(llama, stats_text, key_cache, tmp_path, monkeypatch):
    import instructedit.editor.key_stats as ks

    em = rome_editable(llama)
    name = em.names[0]
    first = key_stats(llama, [name], 1, KeyStatsConfig(text_file=stats_text))[name]
    assert first.path.is_file() and key_cache in first.path.parents
    saved = torch.load(first.path, weights_only=True)
    assert saved["count"] == first.count > 1000 and saved["n_texts"] == first.n_texts == 300
    assert saved["layer"] == name and saved["source"].startswith("file ")
    assert not list(first.path.parent.glob("*.tmp"))
    # the same texts by a direct, unbatched forward (no padding) give the same moments
    keys = []
    hook = em.layers[name].register_forward_hook(lambda _m, a, _o: keys.append(a[0][0].double()))
    try:
        with torch.no_grad():
            for line in Path(stats_text).read_text().splitlines():
                llama.model(**llama.tokenizer(line, return_tensors="pt"))
    finally:
        hook.remove()
    k = torch.cat(keys)
    torch.testing.assert_close(first.mom2, k.T @ k / len(k), atol=1e-9, rtol=1e-6)
    monkeypatch.setattr(ks, "compute_moments", lambda *a, **kw: pytest.fail("recomputed a cached layer"))
    again = key_stats(llama, [name], 1, KeyStatsConfig(text_file=stats_text))[name]
    assert torch.equal(again.mom2, first.mom2) and again.path == first.path
    other = tmp_path / "other.txt"
    other.write_text("Something else entirely.\n" * 3)
    monkeypatch.undo()
    assert key_stats(llama, [name], 1, KeyStatsConfig(text_file=str(other)))[name].path != first.path


def test_key_stats_default_source_is_the_corpora_train_texts(shared_data, monkeypatch):
    from instructedit.editor.key_stats import source_texts

    monkeypatch.setenv("INSTRUCTEDIT_DATA", str(shared_data))
    texts, where = source_texts(KeyStatsConfig(tasks=("counterfact",), max_texts=50))
    assert len(texts) == 50 and len(set(texts)) == 50 and where == "corpora counterfact (train)"


def test_key_stats_text_file_errors_name_the_file(tmp_path):
    from instructedit.editor.key_stats import file_texts

    with pytest.raises(FileNotFoundError, match="missing.txt"):
        file_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt"):
        file_texts(tmp_path / "empty.txt")


def test_rome_through_the_edit_api_is_the_evaluated_edit_and_reverts(llama, stats_text, key_cache):
    """load_method("rome") edits like evaluation does (same factors from the plain prompt, even when
    the request brings an instruction), says so in the manifest, and revert() is bit for bit."""
    from editor_facts import fact_records
    from instructedit.api import EditRequest, load_method
    from instructedit.data.batches import edit_batch

    bound = load_method("rome", llama, hparams={"stats": {"text_file": stats_text}})
    rec = fact_records(1)[0]
    name = bound.editable.names[0]
    before = bound.editable.layers[name].weight.detach().clone()
    req = EditRequest(prompt=rec.prompt, target=rec.target_new, subject=rec.subject,
                      instruction="Update the fact.", rephrases=list(rec.rephrase_prompts))
    torch.manual_seed(0)
    result = bound.edit([req])
    info = result[0]
    assert info.edit_input == rec.prompt and "instruction is not used" in info.note
    assert [p.kind for p in info.probes] == ["prompt", "rephrase"]  # no instructed edit input
    assert info.probe("prompt").p_after > info.probe("prompt").p_before
    m = result.manifest()["editor"]
    assert m["method"] == "rome" and m["trained"] is False and m["hyperparameters"]["stats"]["text_file"] == stats_text
    edited = bound.editable.layers[name].weight.detach().clone()
    result.revert()
    assert torch.equal(bound.editable.layers[name].weight, before)

    # The evaluated edit: the same make_edits on the plain-prompt batch, applied the same way.
    batch = edit_batch([rec], bound.tokenizer, bound.max_length, instructed=False)
    torch.manual_seed(0)
    with torch.enable_grad():
        edits = bound.make_edits(batch, bound.editable.lower(batch))
    with bound.editable.apply(edits):
        torch.testing.assert_close(bound.editable.layers[name].weight, edited)

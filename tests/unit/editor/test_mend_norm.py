"""MEND's normalisation and token mask: running statistics equal a two-pass mean/std (also when two
data-parallel workers fold their batches), low-variance dimensions come out standardised, tokens
with a zero output gradient feed neither the statistics nor the edit, and checkpoints written
before these options existed edit exactly as before."""

import pytest
import torch
from instructedit.config import ConfigError, EditorConfig, to_dict
from instructedit.data.batches import encode_pairs
from instructedit.editor.mend import LEGACY_EDITOR_FIELDS, MendEditor, editor_config_of
from instructedit.editor.transform import RunningNorm

SCALE = torch.tensor([1e-6, 1e-4, 1.0, 1e3], dtype=torch.float64)
OFFSET = torch.tensor([5.0, -3e-2, 0.0, 1e4], dtype=torch.float64)  # |mean| >> std on some dims


def stream(seed, sizes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g, dtype=torch.float64) * SCALE + OFFSET for n in sizes]


def test_running_stats_equal_two_pass_mean_and_std():
    batches = stream(0, (1, 7, 3, 20, 0, 5))
    norm = RunningNorm(2, 4)
    for b in batches:
        norm.update(1, b)
    allx = torch.cat(batches)
    assert norm.count[1] == len(allx) and norm.count[0] == 0
    torch.testing.assert_close(norm.mean[1], allx.mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(norm.std(1), allx.std(0), rtol=1e-9, atol=0)


def test_two_workers_fold_to_the_two_pass_stats_of_the_global_batch():
    # What update() does under torch.distributed, without a process group: each worker packs its
    # share's moments, all_gather hands every worker both packs, each folds them in rank order.
    a_batches, b_batches = stream(1, (4, 1, 9, 2)), stream(2, (3, 6, 0, 8))
    wa, wb = RunningNorm(1, 4), RunningNorm(1, 4)
    for xa, xb in zip(a_batches, b_batches):
        gathered = [RunningNorm.local_moments(xa), RunningNorm.local_moments(xb)]
        for worker in (wa, wb):
            for part in gathered:
                worker.merge(0, part)
    allx = torch.cat(a_batches + b_batches)
    for w in (wa, wb):
        assert w.count[0] == len(allx)
        torch.testing.assert_close(w.mean[0], allx.mean(0), rtol=1e-12, atol=0)
        torch.testing.assert_close(w.std(0), allx.std(0), rtol=1e-9, atol=0)
    assert torch.equal(wa.m2, wb.m2) and torch.equal(wa.mean, wb.mean)  # replicas stay identical


def test_low_variance_dims_come_out_with_unit_std():
    x = torch.cat(stream(3, (200,)))
    x[:, 1] = x[:, 1] * 10  # std 1e-3: above the eps, below sqrt(1e-5)
    new, legacy = RunningNorm(1, 4), RunningNorm(1, 4, eps=1e-5, eps_on="var")
    for norm in (new, legacy):
        norm.update(0, x)
    out = new(0, x).std(0)
    assert torch.all((out[1:] - 1).abs() < 1e-3), out  # std 1e-3 .. 1e3: all standardised
    s0 = float(x[:, 0].std())  # about 1e-6: only ten times the eps, so (std / (std + eps)) ~ 0.91
    assert abs(float(out[0]) - s0 / (s0 + 1e-7)) < 1e-6
    old = legacy(0, x).std(0)
    assert float(old[1]) < 0.5 and abs(float(old[3]) - 1) < 1e-3  # the legacy norm shrank dim 1


def test_editor_config_checks_its_choices():
    with pytest.raises(ConfigError, match="editor.token_select"):
        EditorConfig(token_select="all")
    with pytest.raises(ConfigError, match="editor.norm_eps_on"):
        EditorConfig(norm_eps_on="both")
    with pytest.raises(ConfigError, match="editor.loc_positions"):
        EditorConfig(loc_positions="prompt")


# ----------------------------------------------------------------------------- token mask
PROMPTS = ["The capital of Freedonia is", "Alice works as a", "The Eiffel tower stands in the city of"]
TARGETS = ["Sylvania", "pilot", "Rome"]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def loaded(request):
    from instructedit.models import build_model

    return build_model(request.param)


def make_editor(loaded, **kw):
    torch.manual_seed(0)
    return MendEditor(loaded, EditorConfig(rank=32, edit_lr=1e-2, **kw))


def test_zero_gradient_tokens_feed_neither_the_stats_nor_the_edit(loaded):
    b = encode_pairs(loaded.tokenizer, PROMPTS, TARGETS, row_edit=[0, 1, 2])
    ed = make_editor(loaded).train()
    u, d, _ = ed.edit_gradients(b)
    n = ed.names[0]
    real = b.attention_mask.bool()
    zero_d = real & (d[n] == 0).all(-1)
    last = b.attention_mask.sum(1) - 1
    assert zero_d[torch.arange(len(b)), last].all()  # each row's last token predicts nothing scored
    sel = ed.selected_tokens(u[n], d[n], b.attention_mask)
    assert torch.equal(sel, real & ~zero_d)
    edits = ed.transform(u, d, b.attention_mask)
    norm = ed.transforms[ed.shape_key[n]].norm
    mode = ed.mode[n]
    assert norm.count[mode] == int(sel.sum())  # statistics: the selected tokens only
    assert (edits[n].U[zero_d] == 0).all() and (edits[n].D[zero_d] == 0).all()
    assert (edits[n].D[sel] != 0).any(-1).all()
    # The statistics are those of the selected tokens, whatever the zero-gradient ones hold.
    x = torch.cat([u[n], d[n]], -1)[sel].double()
    torch.testing.assert_close(norm.mean[mode], x.mean(0), rtol=1e-9, atol=1e-12)

    legacy = make_editor(loaded, token_select="attention").train()
    legacy_edits = legacy.transform(u, d, b.attention_mask)
    lnorm = legacy.transforms[legacy.shape_key[n]].norm
    assert lnorm.count[legacy.mode[n]] == int(real.sum())
    assert (legacy_edits[n].D[zero_d] != 0).any()  # what the mask removes


def test_a_row_s_padding_and_last_token_change_nothing(loaded):
    # The same edit, alone and beside a longer row (more padding): identical factors on its real
    # tokens and zero elsewhere, with statistics trained in both cases on the same tokens.
    ed = make_editor(loaded).eval()
    one = encode_pairs(loaded.tokenizer, PROMPTS[1:2], TARGETS[1:2], row_edit=[0])
    two = encode_pairs(loaded.tokenizer, PROMPTS[1:], TARGETS[1:], row_edit=[0, 1])
    e1, _ = ed.edit(one)
    e2, _ = ed.edit(two)
    w = one.input_ids.shape[1]
    for n in ed.names:
        torch.testing.assert_close(e2[n].D[0, :w], e1[n].D[0], atol=1e-7, rtol=1e-5)
        assert (e2[n].D[0, w:] == 0).all() and (e1[n].D[0, -1] == 0).all()


# ----------------------------------------------------------------------------- compatibility
def legacy_reference(ed: MendEditor, u, d, mask):
    """The edit as the code before the mask and the std-eps computed it, spelt out."""
    sel = mask.bool()
    out = {}
    for i, n in enumerate(ed.names):
        g = ed.transforms[ed.shape_key[n]]
        mode = ed.mode[n]
        x = torch.cat([u[n][sel], d[n][sel]], -1)
        var = g.norm.m2[mode] / (g.norm.count[mode] - 1)
        std = (var + 1e-5).sqrt()
        x = (x - g.norm.mean[mode].to(x.dtype)) / std.to(x.dtype)
        for layer in g.layers:
            x = layer(x, mode)
        U = u[n].new_zeros(u[n].shape).masked_scatter(sel[..., None], x[:, : g.in_dim])
        D = d[n].new_zeros(d[n].shape).masked_scatter(sel[..., None], x[:, g.in_dim:])
        out[n] = (U, -ed.edit_lrs[i] * D)
    return out


def test_an_old_format_checkpoint_edits_bit_identically_to_before(tmp_path, loaded):
    b = encode_pairs(loaded.tokenizer, PROMPTS, TARGETS, row_edit=[0, 1, 2])
    trained = make_editor(loaded, **LEGACY_EDITOR_FIELDS).train()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trained.edit(b)  # statistics from a training-mode edit
    state = trained.checkpoint_state()
    for k in LEGACY_EDITOR_FIELDS:  # as written before these fields existed
        del state["editor_config"][k]
    assert state["format"] == "instructedit-editor/1"
    torch.save(state, tmp_path / "editor.pt")
    old = MendEditor.from_checkpoint(tmp_path / "editor.pt", loaded).eval()
    assert {k: getattr(old.cfg, k) for k in LEGACY_EDITOR_FIELDS} == LEGACY_EDITOR_FIELDS
    u, d, _ = old.edit_gradients(b)
    with torch.no_grad():
        got = old.transform(u, d, b.attention_mask)
        ref = legacy_reference(old, u, d, b.attention_mask)
    for n in old.names:
        assert torch.equal(got[n].U, ref[n][0]) and torch.equal(got[n].D, ref[n][1]), n
    # A checkpoint written today stores every field and loads with the values it was made with.
    fresh = make_editor(loaded)
    cfg = editor_config_of(fresh.checkpoint_state())
    assert cfg == fresh.cfg and cfg.token_select == "gradient" and cfg.norm_eps_on == "std"
    assert set(LEGACY_EDITOR_FIELDS) <= set(to_dict(cfg))

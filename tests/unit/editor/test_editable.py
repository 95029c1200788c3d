"""The editable model on its own, and MEND checkpoints written before it was split out of MEND."""

import pytest
import torch
from instructedit.config import load_model_config, to_dict
from instructedit.data.batches import encode_pairs
from instructedit.editor.editable import EditableModel, edits_digest
from instructedit.editor.hooks import LowRankEdit
from instructedit.editor.mend import MendEditor
from instructedit.models import build_model, weight_fingerprint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama():
    return build_model("tiny-llama")


def test_default_editable_is_the_yaml_edited_weights_without_parameters(llama):
    em = EditableModel(llama)
    assert em.names == llama.edited_names
    assert em.split.split_at == 2 and em.layer_indices == [2, 3]
    assert not isinstance(em, torch.nn.Module)  # nothing of its own to train or save


def test_chosen_layers_move_the_split_and_lower_upper_is_the_full_forward(llama):
    em = EditableModel(llama, layers=[1], weights=["model.layers.{i}.mlp.down_proj"])
    assert em.names == ["model.layers.1.mlp.down_proj"] and em.split.split_at == 1
    b = encode_pairs(llama.tokenizer, ["The capital of Freedonia is", "Bob is a"], ["Sylvania", "pilot"], [0, 1])
    with torch.no_grad():
        split = em.answer_logits(b)
        full = llama.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[b.answer_mask]
    torch.testing.assert_close(split, full, atol=1e-5, rtol=1e-5)


def test_apply_revert_and_digest(llama):
    em = EditableModel(llama, layers=[1], weights=["model.layers.{i}.mlp.down_proj"])
    name = em.names[0]
    g = torch.Generator().manual_seed(0)
    e = {name: LowRankEdit(U=torch.randn(2, 1, 128, generator=g), D=torch.randn(2, 1, 64, generator=g))}
    before = em.layers[name].weight.detach().clone()
    with em.apply(e, which=[1]):
        torch.testing.assert_close(em.layers[name].weight - before, e[name].D[1].T @ e[name].U[1])
    assert torch.equal(em.layers[name].weight, before)
    assert edits_digest(e) == edits_digest({name: LowRankEdit(e[name].U.clone(), e[name].D.clone())})


# The state_dict layout of MendEditor(tiny-llama, EditorConfig(rank=8)) as the code before the
# split wrote it (commit a9fb7ed): a checkpoint saved then must load into today's MendEditor.
OLD_TINY_LLAMA_KEYS = [
    ("edit_lrs", (6,)),
    *[(f"transforms.{k}.{p}", s) for k, n in (("64x128", 4), ("128x64", 2)) for p, s in (
        ("norm.count", (n,)), ("norm.mean", (n, 192)), ("norm.m2", (n, 192)),
        ("layers.0.scale", (n, 192)), ("layers.0.shift", (n, 192)),
        ("layers.0.down.weight", (8, 192)), ("layers.0.down.bias", (8,)),
        ("layers.0.up.weight", (192, 8)), ("layers.0.up.bias", (192,)))],
]
OLD_EDITOR_CONFIG = {"rank": 8, "n_hidden": 1, "norm": True, "shared": True, "edit_lr": 0.5, "lr": 1e-6,
                     "lr_lr": 1e-4, "c_edit": 0.1, "c_loc": 1.0, "grad_clip": 100.0,
                     "rephrase_in_edit_loss": False, "edited_layers": []}


def test_checkpoint_in_the_pre_split_layout_loads(tmp_path, llama):
    g = torch.Generator().manual_seed(1)
    state = {}
    for k, shape in OLD_TINY_LLAMA_KEYS:
        dtype = torch.float64 if ".norm." in k else torch.float32
        state[k] = torch.rand(shape, generator=g, dtype=dtype) + (2 if k.endswith("count") else 0)
    names = [f"model.layers.{i}.mlp.{w}" for i in (2, 3) for w in ("gate_proj", "up_proj", "down_proj")]
    model_config = to_dict(load_model_config("tiny-llama"))
    for new_field in ("mlp_out", "rome_layer", "memit_layers"):  # fields added since
        model_config.pop(new_field)
    torch.save({"format": "instructedit-editor/1", "editor_config": OLD_EDITOR_CONFIG,
                "model_config": model_config, "model_name": "tiny-llama", "edited_weights": names,
                "fingerprint": weight_fingerprint(llama.model, names), "state_dict": state,
                "run_config": {"mode": "instructedit"}, "step": 20}, tmp_path / "editor.pt")
    ed = MendEditor.from_checkpoint(tmp_path / "editor.pt", llama)  # strict load_state_dict
    loaded = ed.state_dict()
    assert sorted(loaded) == sorted(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    b = encode_pairs(llama.tokenizer, ["The capital of Freedonia is"], ["Sylvania"], [0])
    edits, info = ed.edit(b)
    assert set(edits) == set(names) and torch.isfinite(info.pre_loss).all()
    again = MendEditor.from_checkpoint(ed.checkpoint_state(), llama)  # and today's layout round-trips
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in loaded.items())

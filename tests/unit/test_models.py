"""Model registry: tiny models build deterministically and run; the offline SmolLM2 loads from its
GGUF package through the fp32 cache; YAML module paths resolve."""

import os

import pytest
import torch
from instructedit.models import build_model, cache_dir, weight_fingerprint


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_tiny_models_are_seeded_and_run(name):
    a, b = build_model(name), build_model(name)
    assert weight_fingerprint(a.model, a.edited_names) == weight_fingerprint(b.model, b.edited_names)
    x = a.tokenizer(["The capital of France is"], return_tensors="pt")
    out = a.model(**x).logits
    assert out.shape[:2] == x["input_ids"].shape and torch.isfinite(out).all()
    assert len(a.edited_names) in (4, 6)  # 2 layers x (gate, up, down) or 2 x (c_fc, c_proj)
    assert not any(p.requires_grad for p in a.model.parameters())  # the base model is frozen


def test_unknown_module_path_fails_early(monkeypatch):
    from instructedit.config import load_model_config, replace

    cfg = replace(load_model_config("tiny-llama"), edited_weights=("model.layers.{i}.mlp.nope",))
    with pytest.raises(KeyError, match="nope"):
        build_model(cfg)


def test_smollm2_loads_offline_from_the_package_cache():
    # Converts once from the GGUF file (~20 s) into $INSTRUCTEDIT_CACHE, then reloads in well under a second.
    loaded = build_model("smollm2-135m")
    assert (cache_dir() / "models" / "smollm2-135m" / "config.json").exists()
    cfg = loaded.model.config
    assert cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert loaded.edited_names[0] == "model.layers.27.mlp.gate_proj"
    tok = loaded.tokenizer
    x = tok(["The capital of France is"], return_tensors="pt")
    out = loaded.model.generate(**x, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0][x["input_ids"].shape[1]:])
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # loaded with the hub switched off

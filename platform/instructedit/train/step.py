"""One editor training step: no I/O, no Ray, no MLflow.

edit rows -> (u, d) -> transform -> edits; then, with the edits applied row by row:
  edit loss  = NLL of the target on the edit input (ConvSent: unlikelihood of good vs bad sentences)
  loc loss   = KL(pre || post) on the edit's locality prompt (never instructed)
  total      = c_edit * edit + c_loc * loc
Every group's lower blocks run once; the pre-edit and post-edit passes reuse those hidden states.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..config import EditorConfig
from ..data.batches import TokenBatch, edit_batch, probe_batch
from ..editor import losses
from ..editor.mend import MendEditor


@dataclass
class StepBatch:
    edit: TokenBatch
    loc: TokenBatch | None
    sentiment: TokenBatch | None  # ConvSent good/bad sentences, rows tied to their edit
    is_sentiment: torch.Tensor  # (B,) bool: the edit's loss is unlikelihood
    tasks: list[str]

    def to(self, device) -> StepBatch:
        return StepBatch(self.edit.to(device), self.loc.to(device) if self.loc else None,
                         self.sentiment.to(device) if self.sentiment else None,
                         self.is_sentiment.to(device), self.tasks)


def make_step_batch(records, tokenizer, max_length: int = 96, seed: int = 0, n_sentences: int = 2) -> StepBatch:
    """A training batch: one locality probe per edit (seeded pick), a few sentiment sentences."""
    rng = random.Random(seed)
    return StepBatch(
        edit=edit_batch(records, tokenizer, max_length),
        loc=probe_batch(records, tokenizer, "locality", max_length, pick=rng.randrange(1 << 30)),
        # instructed like the edit input, as training has always scored sentiment rows
        sentiment=probe_batch(records, tokenizer, "sentiment", max_length, limit=n_sentences, instructed_probe=True),
        is_sentiment=torch.tensor([r.sentiment is not None for r in records]),
        tasks=[r.task for r in records],
    )


def training_step(editor: MendEditor, batch: StepBatch, cfg: EditorConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward of one step; returns the loss (backward is the caller's) and scalar metrics."""
    B = len(batch.edit)
    h_edit = editor.lower(batch.edit)
    edits, info = editor.edit(batch.edit, h_edit)

    # Edit loss, NLL tasks: target tokens on the edit input after the edit.
    post = editor.answer_logits(batch.edit, h_edit, edits)
    rows = losses.answer_rows(batch.edit.answer_mask)
    ids = batch.edit.answer_ids[batch.edit.answer_mask]
    nll = losses.nll(post, ids, rows, B)
    acc = losses.token_accuracy(post.detach(), ids, rows, B)
    edit_loss = nll
    success = (acc == 1.0).float()
    if batch.sentiment is not None:
        h_s = editor.lower(batch.sentiment)
        ul, s_ok = losses.sentiment_scores(editor.answer_logits(batch.sentiment, h_s, edits), batch.sentiment, B)
        edit_loss = torch.where(batch.is_sentiment, ul, nll)
        success = torch.where(batch.is_sentiment, s_ok, success)

    loc_loss = torch.zeros((), device=post.device)
    if batch.loc is not None:
        h_loc = editor.lower(batch.loc)
        with torch.no_grad():
            pre_loc = editor.answer_logits(batch.loc, h_loc)
        post_loc = editor.answer_logits(batch.loc, h_loc, edits)
        lrows = losses.answer_rows(batch.loc.answer_mask)
        loc_loss = losses.kl_pre_post(pre_loc, post_loc, lrows, len(batch.loc)).mean()

    total = cfg.c_edit * edit_loss.mean() + cfg.c_loc * loc_loss
    metrics = {
        "loss/total": float(total.detach()),
        "loss/edit": float(edit_loss.detach().mean()),
        "loss/loc": float(loc_loss.detach()),
        "loss/pre_edit": float(info.pre_loss.mean()),
        "train/edit_success": float(success.mean()),
        "lr/edit_mean": float(editor.edit_lrs.detach().mean()),
    }
    return total, metrics

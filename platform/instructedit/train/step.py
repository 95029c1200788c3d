"""One editor training step: no I/O, no Ray, no MLflow.

edit rows -> (u, d) -> transform -> edits; then, with the edits applied row by row:
  edit loss  = NLL of the target on the edit input (ConvSent: unlikelihood of good vs bad sentences);
               with editor.rephrase_in_edit_loss also on the plain prompt and a rephrase (MEND's
               edit_outer), averaged per edit over its rows
  loc loss   = KL(pre || post) on the edit's locality sequence (never instructed), over every token
               of it (editor.loc_positions: all, as MEND) or its answer positions only
  total      = c_edit * edit + c_loc * loc
Every group's lower blocks run once; the pre-edit and post-edit passes reuse those hidden states.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from ..config import EditorConfig
from ..data.batches import TokenBatch, edit_batch, encode_pairs, mark_prefixes, probe_batch
from ..editor import losses
from ..editor.mend import MendEditor


@dataclass
class StepBatch:
    edit: TokenBatch
    loc: TokenBatch | None
    sentiment: TokenBatch | None  # ConvSent good/bad sentences, rows tied to their edit
    is_sentiment: torch.Tensor  # (B,) bool: the edit's loss is unlikelihood
    tasks: list[str]
    outer: TokenBatch | None = None  # rephrase_in_edit_loss: plain prompt + rephrase rows, tied to their edit

    def to(self, device) -> StepBatch:
        return StepBatch(self.edit.to(device), self.loc.to(device) if self.loc else None,
                         self.sentiment.to(device) if self.sentiment else None,
                         self.is_sentiment.to(device), self.tasks,
                         self.outer.to(device) if self.outer else None)


def make_step_batch(records, tokenizer, max_length: int = 96, seed: int = 0, n_sentences: int = 2,
                    outer: bool = False, share_prefixes: bool = True,
                    instruction_dropout: float = 0.0) -> StepBatch:
    """A training batch: one locality probe per edit (seeded pick), a few sentiment sentences;
    `outer` (editor.rephrase_in_edit_loss): the plain prompts and one rephrase per edit.
    `share_prefixes`: the instructed rows carry their instruction prefix's cut point, so the lower
    blocks (frozen) run each instruction once and serve it from the shared-prefix cache after
    (SplitModel.lower); the same numbers within float tolerance, off only to measure it.
    `instruction_dropout` (train.instruction_dropout): each edit, with this probability, is made
    from its record without the instruction (edit row and sentiment rows plain)."""
    rng = random.Random(seed)
    loc_pick = rng.randrange(1 << 30)
    if instruction_dropout > 0:
        # A draw per record from the step seed and its case id: the same whatever the number of
        # workers the global batch is split over, and the step's other picks stay those of a run
        # without dropout.
        records = [plain(r) if random.Random(f"{seed}/drop/{r.case_id}").random() < instruction_dropout else r
                   for r in records]
    edit = edit_batch(records, tokenizer, max_length)
    # instructed like the edit input, as training has always scored sentiment rows
    sentiment = probe_batch(records, tokenizer, "sentiment", max_length, limit=n_sentences, instructed_probe=True)
    if share_prefixes:
        edit = mark_prefixes(edit, tokenizer, records, instructed=True, prompts=False)
        if sentiment is not None:
            sentiment = mark_prefixes(sentiment, tokenizer, records, instructed=True)
    return StepBatch(
        edit=edit,
        loc=probe_batch(records, tokenizer, "locality", max_length, pick=loc_pick),
        sentiment=sentiment,
        is_sentiment=torch.tensor([r.sentiment is not None for r in records]),
        tasks=[r.task for r in records],
        outer=outer_batch(records, tokenizer, max_length, rng.randrange(1 << 30)) if outer else None,
    )


def plain(record):
    """`record` without its instruction: the editor sees the plain prompt, as a user asks it."""
    return dataclasses.replace(record, instruction_id="", instruction="", edit_input=record.prompt)


def outer_batch(records, tokenizer, max_length: int, pick: int) -> TokenBatch | None:
    """Rows where the edited model must also produce the target (MEND's edit_outer): the record's
    plain prompt, when the edit input differs from it (an instruction is on it), and one of its
    rephrases (seeded pick, so a run cycles through them). NLL records only: a ConvSent edit is
    scored on its sentiment sentences."""
    prompts, row_edit = [], []
    for e, r in enumerate(records):
        if r.sentiment is not None:
            continue
        if (r.edit_input or r.prompt) != r.prompt:
            prompts.append(r.prompt)
            row_edit.append(e)
        rephrases = [p for p in r.rephrase_prompts if p.strip()]
        if rephrases:
            prompts.append(rephrases[pick % len(rephrases)])
            row_edit.append(e)
    if not prompts:
        return None
    return encode_pairs(tokenizer, prompts, [records[e].target_new for e in row_edit], row_edit,
                        meta=[{"kind": "outer", "case_id": records[e].case_id} for e in row_edit],
                        max_length=max_length)


def loc_positions(batch: TokenBatch, which: str) -> TokenBatch:
    """The locality batch with the positions its KL is taken over: every attended token (MEND) or
    the answer positions only."""
    if which == "answer":
        return batch
    return dataclasses.replace(batch, answer_mask=batch.attention_mask.bool())


def training_step(editor: MendEditor, batch: StepBatch, cfg: EditorConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward of one step; returns the loss (backward is the caller's) and scalar metrics."""
    # record_function labels name the phases for benchmarks/train_step.py's profile (free otherwise).
    B = len(batch.edit)
    with record_function("step/lower:edit"):
        h_edit = editor.lower(batch.edit)
    with record_function("step/edit:grad+transform"):
        edits, info = editor.edit(batch.edit, h_edit)

    # Edit loss, NLL tasks: target tokens on the edit input after the edit.
    with record_function("step/edit_loss"):
        post = editor.answer_logits(batch.edit, h_edit, edits)
        rows = losses.answer_rows(batch.edit.answer_mask)
        ids = batch.edit.answer_ids[batch.edit.answer_mask]
        nll = losses.nll(post, ids, rows, B)
        acc = losses.token_accuracy(post.detach(), ids, rows, B)
        success = (acc == 1.0).float()
    extra: dict[str, float] = {}
    if batch.outer is not None:
        # The same edit must hold on the plain prompt and a rephrase: each edit's loss is the mean
        # over its edit-input row and its outer rows.
        o = batch.outer
        with record_function("step/lower:outer"):
            h_o = editor.lower(o)
        with record_function("step/outer_loss"):
            post_o = editor.answer_logits(o, h_o, edits)
            orows = losses.answer_rows(o.answer_mask)
            oids = o.answer_ids[o.answer_mask]
            nll_o = losses.nll(post_o, oids, orows, len(o))
            nll = losses.per_row_mean(torch.cat([nll, nll_o]), torch.cat([torch.arange(B, device=nll.device), o.row_edit]), B)
            o_ok = (losses.token_accuracy(post_o.detach(), oids, orows, len(o)) == 1.0).float()
        extra = {"loss/edit_outer": float(nll_o.detach().mean()), "train/outer_success": float(o_ok.mean())}
    edit_loss = nll
    if batch.sentiment is not None:
        with record_function("step/lower:sentiment"):
            h_s = editor.lower(batch.sentiment)
        with record_function("step/sentiment_loss"):
            ul, s_ok = losses.sentiment_scores(editor.answer_logits(batch.sentiment, h_s, edits), batch.sentiment, B)
        edit_loss = torch.where(batch.is_sentiment, ul, nll)
        success = torch.where(batch.is_sentiment, s_ok, success)

    loc_loss = torch.zeros((), device=post.device)
    if batch.loc is not None:
        loc = loc_positions(batch.loc, cfg.loc_positions)
        with record_function("step/lower:loc"):
            h_loc = editor.lower(loc)
        with record_function("step/loc_loss"):
            with torch.no_grad():
                pre_loc = editor.answer_logits(loc, h_loc)
            post_loc = editor.answer_logits(loc, h_loc, edits)
            lrows = losses.answer_rows(loc.answer_mask)
            loc_loss = losses.kl_pre_post(pre_loc, post_loc, lrows, len(loc)).mean()

    total = cfg.c_edit * edit_loss.mean() + cfg.c_loc * loc_loss
    metrics = {
        "loss/total": float(total.detach()),
        "loss/edit": float(edit_loss.detach().mean()),
        "loss/loc": float(loc_loss.detach()),
        "loss/pre_edit": float(info.pre_loss.mean()),
        "train/edit_success": float(success.mean()),
        "lr/edit_mean": float(editor.edit_lrs.detach().mean()),
        **extra,
    }
    return total, metrics

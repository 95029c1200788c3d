"""Losses on answer positions. Every function works on the logits of the selected answer positions
(n_sel, vocab) and returns one value per row, so B independent edits stay independent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..data.batches import TokenBatch


def answer_rows(answer_mask: torch.Tensor) -> torch.Tensor:
    """Row index of every selected answer position, in the order `mask` selection yields them."""
    return answer_mask.nonzero(as_tuple=True)[0]


def per_row_mean(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    total = torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    count = torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(
        0, rows, torch.ones_like(values))
    return total / count.clamp(min=1)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, None]).squeeze(-1)


def nll(logits: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens, per row."""
    return per_row_mean(-token_logprobs(logits, ids), rows, n_rows)


def unlikelihood(logits: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, n_rows: int,
                 good_row: torch.Tensor) -> torch.Tensor:
    """ConvSent: -log p(good) on rows of the target sentiment, -log(1 - p(bad)) on the others."""
    logp = token_logprobs(logits, ids)
    good_tok = good_row[rows]
    # log(1 - p) computed stably from log p
    bad_term = -torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
    return per_row_mean(torch.where(good_tok, -logp, bad_term), rows, n_rows)


def kl_pre_post(pre_logits: torch.Tensor, post_logits: torch.Tensor, rows: torch.Tensor,
                n_rows: int) -> torch.Tensor:
    """KL(pre || post) of the next-token distributions at each answer position, mean per row."""
    pre = torch.log_softmax(pre_logits.float(), -1)
    post = torch.log_softmax(post_logits.float(), -1)
    kl = F.kl_div(post, pre, log_target=True, reduction="none").sum(-1)
    return per_row_mean(kl, rows, n_rows)


def token_accuracy(logits: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Teacher-forced argmax accuracy of the answer tokens, per row."""
    return per_row_mean((logits.argmax(-1) == ids).float(), rows, n_rows)


def sentiment_scores(logits: torch.Tensor, batch: TokenBatch, n_edits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per edit: the unlikelihood loss, and 1.0 where the mean log-prob of the good sentences
    exceeds that of the bad ones (the edit steers the model to the target sentiment)."""
    rows = answer_rows(batch.answer_mask)
    ids = batch.answer_ids[batch.answer_mask]
    good = torch.tensor([bool(m["good"]) for m in batch.meta], device=logits.device)
    ul_row = unlikelihood(logits, ids, rows, len(batch), good)
    lp_row = per_row_mean(token_logprobs(logits, ids), rows, len(batch))
    ul = per_row_mean(ul_row, batch.row_edit, n_edits)
    good_lp = per_row_mean(lp_row[good], batch.row_edit[good], n_edits)
    bad_lp = per_row_mean(lp_row[~good], batch.row_edit[~good], n_edits)
    return ul, (good_lp > bad_lp).float()

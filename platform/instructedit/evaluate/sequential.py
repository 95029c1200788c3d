"""Sequential editing: K edits applied cumulatively to one model.

Edit k is computed on the model that already carries edits 1..k-1 (editor.apply sums it into the
plain weights), which is how an editor is used in practice and what independent-edit evaluation
does not measure. At each checkpoint K the rows report, over the first K edits:
  reliability      target-token accuracy of every earlier edit's plain prompt on the current model
  generalization   the same on their plain rephrases
  es               ConvSent edit success (core.es_sentiment, pre = the unedited model) of earlier
                   sentiment edits
  locality         share of answer-token predictions on their locality prompts unchanged from the
                   unedited model
  last_reliability reliability of edit K right after it was applied (plain prompt)
Headline metrics are on plain probes, as in independent-edit evaluation (docs/metrics.md).
All weights are restored bit for bit at the end (also on error).
"""

from __future__ import annotations

import math
import sys
import time

import torch

from ..data.batches import edit_batch, probe_batch
from ..editor import losses
from .core import es_sentiment


def _checkpoints(n: int, ks: list[int] | None) -> list[int]:
    if ks:
        return sorted({k for k in ks if 1 <= k <= n})
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n]


def _accuracy(editor, batch, max_per_probe: bool) -> dict[int, float]:
    """Per-edit mean accuracy on `batch` with the model's current weights (no patching)."""
    lg = editor.answer_logits(batch)
    rows = losses.answer_rows(batch.answer_mask)
    acc = losses.token_accuracy(lg, batch.answer_ids[batch.answer_mask], rows, len(batch))
    best: dict[int, tuple[int, float]] = {}
    for a, p, e in zip(acc.tolist(), batch.row_probe.tolist(), batch.row_edit.tolist()):
        prev = best.get(p, (e, float("-inf")))[1]
        best[p] = (e, max(prev, a) if max_per_probe else a)
    per_edit: dict[int, list[float]] = {}
    for e, v in best.values():
        per_edit.setdefault(e, []).append(v)
    return {e: sum(v) / len(v) for e, v in per_edit.items()}


def _sentence_logprobs(editor, record, tok, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs, good mask per token) of a ConvSent record's plain sentiment probes."""
    sb = probe_batch([record], tok, "sentiment", max_length)
    lp = losses.token_logprobs(editor.answer_logits(sb), sb.answer_ids[sb.answer_mask])
    good = torch.tensor([bool(m["good"]) for m in sb.meta])[losses.answer_rows(sb.answer_mask)]
    return lp, good


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@torch.no_grad()
def evaluate_sequential(editor, records, make_edits, ks: list[int] | None = None, max_length: int = 128,
                        progress: bool = True, instructed_edit: bool = True) -> list[dict]:
    """Apply the edits of `records` one after another; one metrics row per checkpoint K."""
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    tok = editor.tokenizer
    n = len(records)
    ks = _checkpoints(n, ks)
    nll = [i for i, r in enumerate(records) if r.sentiment is None]
    sent = [i for i, r in enumerate(records) if r.sentiment is not None]
    # Pre-edit locality predictions, once, for every record's locality prompts.
    loc_batch = probe_batch(records, tok, "locality", max_length)
    pre_loc = editor.answer_logits(loc_batch).argmax(-1) if loc_batch is not None else None
    # Pre-edit log-probs of every sentiment sentence, once (ES compares post with pre).
    pre_sent = {i: _sentence_logprobs(editor, records[i], tok, max_length) for i in sent}
    handles = []
    rows: list[dict] = []
    t0 = time.time()
    try:
        for k, r in enumerate(records, start=1):
            eb = edit_batch([r], tok, max_length, instructed=instructed_edit)
            with torch.enable_grad():
                edits = make_edits(eb, editor.lower(eb))
            handles.append(editor.apply(edits))
            last = None
            if r.sentiment is None:
                last = _accuracy(editor, probe_batch([r], tok, "prompt", max_length), False).get(0)
            if k not in ks:
                continue
            done = records[:k]
            row: dict = {"k": k, "last_reliability": last}
            idx = [i for i in nll if i < k]
            if idx:
                row["reliability"] = _mean(_accuracy(editor, probe_batch([done[i] for i in idx], tok, "prompt",
                                                                         max_length), False).values())
                pb = probe_batch([done[i] for i in idx], tok, "rephrase", max_length)
                if pb is not None:
                    row["generalization"] = _mean(_accuracy(editor, pb, True).values())
            sidx = [i for i in sent if i < k]
            if sidx:
                es = [es_sentiment(pre_sent[i][0], _sentence_logprobs(editor, done[i], tok, max_length)[0],
                                   pre_sent[i][1]) for i in sidx]
                row["es"] = _mean([v for v in es if not math.isnan(v)])
            if loc_batch is not None:
                sel = (loc_batch.row_edit < k).nonzero(as_tuple=True)[0]
                if len(sel):
                    post = editor.answer_logits(loc_batch).argmax(-1)
                    rows_all = losses.answer_rows(loc_batch.answer_mask)
                    same = (post == pre_loc).float()
                    keep = (loc_batch.row_edit[rows_all] < k)
                    per_row = losses.per_row_mean(same[keep], rows_all[keep], len(loc_batch))
                    per_edit = losses.per_row_mean(per_row[sel], loc_batch.row_edit[sel], k)
                    have = torch.zeros(k, dtype=torch.bool).index_fill(0, loc_batch.row_edit[sel].cpu(), True)
                    row["locality"] = float(per_edit[have].mean())
            rows.append(row)
            say(f"[sequential] K={k}: " + " ".join(f"{m}={v:.3f}" for m, v in row.items()
                                                     if m != "k" and v is not None)
                + f" ({time.time() - t0:.1f}s)")
    finally:
        for h in reversed(handles):
            h.revert()
    return rows


def sequential_metrics(rows: list[dict], prefix: str = "sequential") -> list[tuple[int, dict[str, float]]]:
    """Rows -> [(K, {`sequential/<metric>`: value})] for tracking.log_metrics(step=K)."""
    return [(r["k"], {f"{prefix}/{m}": v for m, v in r.items() if m != "k" and v is not None}) for r in rows]

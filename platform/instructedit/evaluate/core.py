"""Batched, exact evaluation of B independent edits at once.

For a batch of records: the edit rows run through the editor once (one forward+backward), then every
probe kind (rephrase, portability, locality, sentiment) runs as one batched forward with row r
patched by edit row_edit[r]. Lower blocks run once per probe batch and serve the pre- and post-edit
passes. The numbers equal one-record-at-a-time evaluation (tested).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from ..data.batches import TokenBatch, edit_batch, probe_batch
from ..editor import losses
from ..editor.editor import Edits, MendEditor
from .metrics import edit_success  # noqa: F401  (re-exported for callers of core)

MakeEdits = Callable[[TokenBatch, torch.Tensor], "Edits | None"]


def mend_edits(editor: MendEditor) -> MakeEdits:
    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        with torch.no_grad():  # the transform needs no graph at evaluation
            u, d, _ = editor.edit_gradients(batch, hidden)
            return editor.transform(u, d, batch.attention_mask)

    return make


def no_edits(batch: TokenBatch, hidden: torch.Tensor) -> None:
    return None


def _per_probe(values: torch.Tensor, batch: TokenBatch, reduce: str = "mean") -> dict[int, float]:
    """Row values -> per-probe value (alias rows of one probe: max = any alias counts)."""
    out: dict[int, float] = {}
    for v, p in zip(values.tolist(), batch.row_probe.tolist()):
        out[p] = max(out.get(p, float("-inf")), v) if reduce == "max" else v
    return out


@torch.no_grad()
def evaluate_batch(editor: MendEditor, records, make_edits: MakeEdits, max_length: int = 128) -> list[dict]:
    """Per-case metric dicts for `records`, each edited independently."""
    tok = editor.tokenizer
    B = len(records)
    results = [{"case_id": r.case_id, "task": r.task, "instruction_id": r.instruction_id} for r in records]
    eb = edit_batch(records, tok, max_length)
    h = editor.lower(eb)
    with torch.enable_grad():
        edits = make_edits(eb, h)

    def post_logits(b: TokenBatch, hidden):
        return editor.answer_logits(b, hidden, edits)

    # Reliability (NLL tasks): target tokens on the edit input.
    logits = post_logits(eb, h)
    rows = losses.answer_rows(eb.answer_mask)
    rel = losses.token_accuracy(logits, eb.answer_ids[eb.answer_mask], rows, B)
    for e, r in enumerate(records):
        if r.sentiment is None:
            results[e]["reliability"] = float(rel[e])

    # Generalization and portability: accuracy on instructed probes; any alias counts.
    for kind in ("rephrase", "portability"):
        pb = probe_batch(records, tok, kind, max_length)
        if pb is None:
            continue
        lg = post_logits(pb, editor.lower(pb))
        prow = losses.answer_rows(pb.answer_mask)
        acc = losses.token_accuracy(lg, pb.answer_ids[pb.answer_mask], prow, len(pb))
        best = _per_probe(acc, pb, "max")
        per_case: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        seen = set()
        for r_i, (p, e) in enumerate(zip(pb.row_probe.tolist(), pb.row_edit.tolist())):
            if p in seen:
                continue
            seen.add(p)
            sub = pb.meta[r_i].get("probe_kind", "") if kind == "portability" else ""
            per_case[e][sub].append(best[p])
        for e, by_kind in per_case.items():
            if kind == "rephrase":
                results[e]["generalization"] = sum(by_kind[""]) / len(by_kind[""])
            else:
                means = {k: sum(v) / len(v) for k, v in by_kind.items()}
                for k, v in means.items():
                    results[e][f"portability/{k}"] = v
                results[e]["portability"] = sum(means.values()) / len(means)

    # Locality (NLL tasks) and drawdown (ConvSent): unrelated prompts, pre vs post.
    lb = probe_batch(records, tok, "locality", max_length)
    if lb is not None:
        hl = editor.lower(lb)
        pre = editor.answer_logits(lb, hl)
        post = post_logits(lb, hl)
        lrow = losses.answer_rows(lb.answer_mask)
        same = losses.per_row_mean((pre.argmax(-1) == post.argmax(-1)).float(), lrow, len(lb))
        kl = losses.kl_pre_post(pre, post, lrow, len(lb))
        loc = losses.per_row_mean(same, lb.row_edit, B)
        dd = losses.per_row_mean(kl, lb.row_edit, B)
        has = torch.zeros(B, dtype=torch.bool).index_fill(0, lb.row_edit.cpu(), True)
        for e, r in enumerate(records):
            if not has[e]:
                continue
            if r.sentiment is None:
                results[e]["locality"] = float(loc[e])
            else:
                results[e]["dd"] = float(dd[e])

    # ConvSent edit success: good sentences out-score bad ones after the edit.
    sb = probe_batch(records, tok, "sentiment", max_length)
    if sb is not None:
        _, ok = losses.sentiment_scores(post_logits(sb, editor.lower(sb)), sb, B)
        for e, r in enumerate(records):
            if r.sentiment is not None:
                results[e]["es"] = float(ok[e])
    return results


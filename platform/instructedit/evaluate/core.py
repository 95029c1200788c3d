"""Batched, exact evaluation of B independent edits at once.

For a batch of records: the edit rows run through the method once (one forward+backward for
MEND), then every probe kind runs as one batched forward with row r patched by edit row_edit[r].
Lower blocks run once per probe batch and serve the pre- and post-edit passes.

What is measured (docs/metrics.md): headline metrics on what a user sends to the edited model,
the plain prompt, rephrase, portability question and ConvSent topic question; the same probes
with the record's instruction as `<metric>_instructed` (for every method alike, the pre-edit
model included, so a table separates what the edit did from what the prompt did); greedy
generation from the plain prompts as `*_gen`. Locality and drawdown are plain only.

`score` holds every metric definition and works through a `Forward` (logits and greedy
continuations, pre or post edit). `BatchedForward` patches the edits row by row; the reference in
runner.py applies one record's edit densely and runs the whole model, and must give the same
numbers (tested).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..data.batches import TokenBatch, edit_batch, mark_prefixes, probe_batch
from ..editor import losses
from ..editor.editable import no_edits  # noqa: F401  (the methods' make_edits live with the methods)
from ..editor.hooks import patched
from ..editor.mend import mend_edits  # noqa: F401
from . import generation

MakeEdits = Callable[[TokenBatch, torch.Tensor], "dict | None"]
INSTRUCTED = "_instructed"


@dataclass(frozen=True)
class EvalOptions:
    instructed_edit: bool = True  # the edit input carries the instruction (instruction-trained methods)
    instructed_probes: bool = True  # also score the *_instructed probe variants
    generation: bool = True  # reliability_gen, generalization_gen, locality_gen
    gen_tokens: int = 0  # new tokens per greedy continuation; 0 = the batch's longest answer + 2


# ----------------------------------------------------------------------------------- forwards
class Forward(Protocol):
    def logits(self, batch: TokenBatch, post: bool) -> torch.Tensor: ...

    def logprobs(self, batch: TokenBatch, post: bool) -> torch.Tensor: ...

    def generate(self, prompt_ids: list[list[int]], row_edit: list[int], new_tokens: int,
                 post: bool) -> list[list[int]]: ...

    def unchanged(self, prompt_ids: list[list[int]], row_edit: list[int], new_tokens: int) -> list[bool]:
        """Per prompt: greedy continuation after the edit == before (locality_gen)."""
        ...


def answer_order(batch: TokenBatch, chunks: list[list[int]]) -> torch.Tensor:
    """Where each answer position of the concatenated chunk outputs goes in the batch's own
    (row-major) order of answer positions."""
    counts = batch.answer_mask.sum(1).tolist()
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    return torch.cat([torch.arange(offsets[r], offsets[r] + counts[r]) for rows in chunks for r in rows])


class BatchedForward:
    """Edits patched in row by row. A probe batch runs in chunks of rows of similar length (less
    padding, bounded memory); each chunk's lower blocks run once for the pre and post passes, and
    shared prefixes (instructions, a prompt several rows continue) once for all rows and batches
    (`share_prefixes`; False runs every row whole, the same numbers within float tolerance)."""

    def __init__(self, editor, edits, max_tokens: int = 4096, share_prefixes: bool = True):
        self.editor, self.edits, self.max_tokens = editor, edits, max_tokens
        self.share_prefixes = share_prefixes
        self._last: tuple[TokenBatch, list, torch.Tensor] | None = None  # (batch, chunks, order)
        self._generated: tuple | None = None  # (key, continuations, prompts) of the last pre-edit call
        self._same: dict[str, torch.Tensor] = {}  # outputs of the current batch, when pre == post

    def _chunks(self, batch: TokenBatch):
        if self._last is None or self._last[0] is not batch:  # pre and post of a batch come together
            lengths = batch.attention_mask.sum(1).tolist()
            rows = sorted(range(len(batch)), key=lambda r: lengths[r])
            groups, cur = [], []
            for r in rows:  # rows sorted by length: a chunk's width is its last row's length
                if cur and (len(cur) + 1) * lengths[r] > self.max_tokens:
                    groups.append(cur)
                    cur = []
                cur.append(r)
            if cur:
                groups.append(cur)
            chunks = []
            for g in groups:
                sub = batch.select(g)
                if not self.share_prefixes:
                    sub = dataclasses.replace(sub, prefixes=None)
                chunks.append((sub, self.editor.lower(sub)))
            self._last = (batch, chunks, answer_order(batch, groups))
            self._same = {}
        return self._last[1], self._last[2]

    def _per_chunk(self, batch: TokenBatch, post: bool, kind: str, fn) -> torch.Tensor:
        chunks, order = self._chunks(batch)
        if not self.edits and kind in self._same:  # no edits (pre-edit model): post is pre
            return self._same[kind]
        # shared prefixes also through the upper blocks (rows of one edit continuing one prompt)
        parts = [fn(sub, h, self.edits if post else None, shared_upper=self.share_prefixes) for sub, h in chunks]
        flat = torch.cat(parts)
        out = torch.empty_like(flat)
        out[order.to(flat.device)] = flat
        if not self.edits:
            self._same[kind] = out
        return out

    def logits(self, batch: TokenBatch, post: bool) -> torch.Tensor:
        return self._per_chunk(batch, post, "logits", self.editor.answer_logits)

    def logprobs(self, batch: TokenBatch, post: bool) -> torch.Tensor:
        """Log-probability of each answer token; never holds a whole batch's vocabulary logits
        (nor a chunk's: the LM head runs on slices of its answer positions)."""
        return self._per_chunk(batch, post, "logprobs", self.editor.answer_logprobs)

    def generate(self, prompt_ids, row_edit, new_tokens, post):
        e = self.editor
        key = (id(prompt_ids), new_tokens)
        if not self.edits and self._generated is not None and self._generated[0] == key:
            return self._generated[1]  # no edits: the post-edit continuation is the pre-edit one
        def run():
            if self.share_prefixes:  # lower blocks from the shared-prefix cache, as in the scoring passes
                return generation.greedy_split(e.split, e.tokenizer, prompt_ids, new_tokens)
            return generation.greedy(e.model, e.tokenizer, prompt_ids, new_tokens)

        if post and self.edits:
            with patched(e.layers, self.edits, torch.tensor(row_edit, dtype=torch.long, device=e.device)):
                return run()
        out = run()
        self._generated = (key, out, prompt_ids)  # the ids stay referenced, so the key stays unique
        return out

    def unchanged(self, prompt_ids, row_edit, new_tokens):
        if not self.edits:
            return [True] * len(prompt_ids)
        if not self.share_prefixes:
            before = self.generate(prompt_ids, row_edit, new_tokens, False)
            return [a == b for a, b in zip(before, self.generate(prompt_ids, row_edit, new_tokens, True))]
        e = self.editor

        def edited(rows):
            return patched(e.layers, self.edits, torch.tensor([row_edit[r] for r in rows], dtype=torch.long,
                                                              device=e.device))

        return generation.unchanged_split(e.split, e.tokenizer, prompt_ids, new_tokens, edited)


# ------------------------------------------------------------------------------------ scoring
def _restrict(records, keep: list[int]):
    """The records at `keep`, and a map from their batch index back to the edit index."""
    return [records[i] for i in keep], torch.tensor(keep, dtype=torch.long)


def _probe_batch(records, tok, kind, max_length, keep, instructed_probe=False, generated=False) -> TokenBatch | None:
    """`generated`: the plain prompts are generated from later (the *_gen metrics), so their lower
    states are kept as shared prefixes."""
    sub, back = _restrict(records, keep)
    if not sub:
        return None
    pb = probe_batch(sub, tok, kind, max_length, instructed_probe=instructed_probe)
    if pb is None:
        return None
    return mark_prefixes(dataclasses.replace(pb, row_edit=back[pb.row_edit]), tok, records, instructed_probe,
                         all_prompts=generated and not instructed_probe)


def _accuracy_per_probe(fwd: Forward, pb: TokenBatch) -> dict[int, tuple[int, float, str]]:
    """probe -> (edit, teacher-forced accuracy, probe kind); alias rows: any alias counts (max)."""
    lg = fwd.logits(pb, True)
    rows = losses.answer_rows(pb.answer_mask)
    acc = losses.token_accuracy(lg, pb.answer_ids[pb.answer_mask], rows, len(pb)).tolist()
    best: dict[int, tuple[int, float, str]] = {}
    for r, (p, e) in enumerate(zip(pb.row_probe.tolist(), pb.row_edit.tolist())):
        prev = best.get(p, (e, float("-inf"), ""))[1]
        best[p] = (e, max(prev, acc[r]), pb.meta[r].get("probe_kind", ""))
    return best


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _score_nll(records, tok, fwd: Forward, max_length: int, results: list[dict], suffix: str,
               instructed: bool, generated: bool = False) -> None:
    """reliability, generalization, portability (+ per kind) of one probe variant."""
    keep = [i for i, r in enumerate(records) if r.sentiment is None and (r.instruction or not instructed)]
    for kind, metric in (("prompt", "reliability"), ("rephrase", "generalization"), ("portability", "portability")):
        pb = _probe_batch(records, tok, kind, max_length, keep, instructed, generated and kind != "portability")
        if pb is None:
            continue
        per_edit: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for e, v, sub in _accuracy_per_probe(fwd, pb).values():
            per_edit[e][sub if kind == "portability" else ""].append(v)
        for e, by_kind in per_edit.items():
            means = {k: _mean(v) for k, v in by_kind.items()}
            if kind == "portability":
                for k, v in means.items():
                    results[e][f"portability/{k}{suffix}"] = v
            results[e][metric + suffix] = _mean(list(means.values()))  # portability: mean over kinds


def es_sentiment(pre_lp: torch.Tensor, post_lp: torch.Tensor, good: torch.Tensor) -> float:
    """ConvSent edit success as SERAC defines it, from the per-token log-probs of one edit's
    sentences (target-sentiment tokens where `good`):
        z_sent  = sigmoid(mean_post(good) - mean_post(bad))     the target sentiment wins
        z_topic = min(1, exp(mean_post(good) - mean_pre(good)))  and became more likely, not less
        ES      = z_sent * z_topic
    Means are over tokens of all sentences of a polarity."""
    if not good.any() or good.all():
        return float("nan")
    pos_post, neg_post, pos_pre = post_lp[good].mean(), post_lp[~good].mean(), pre_lp[good].mean()
    z_sent = torch.sigmoid(pos_post - neg_post)
    z_topic = torch.clamp(torch.exp(pos_post - pos_pre), max=1.0)
    return float(z_sent * z_topic)


def _score_sentiment(records, tok, fwd: Forward, max_length: int, results: list[dict], suffix: str,
                     instructed: bool) -> None:
    keep = [i for i, r in enumerate(records) if r.sentiment is not None and (r.instruction or not instructed)]
    sb = _probe_batch(records, tok, "sentiment", max_length, keep, instructed)
    if sb is None:
        return
    rows = losses.answer_rows(sb.answer_mask)
    pre, post = fwd.logprobs(sb, False), fwd.logprobs(sb, True)
    tok_edit = sb.row_edit.to(rows.device)[rows]
    tok_good = torch.tensor([bool(m["good"]) for m in sb.meta], device=rows.device)[rows]
    for e in sorted(set(tok_edit.tolist())):
        sel = tok_edit == e
        es = es_sentiment(pre[sel], post[sel], tok_good[sel])
        if not math.isnan(es):
            results[e]["es" + suffix] = es


def _score_unrelated(records, tok, fwd: Forward, max_length: int, results: list[dict],
                     generated: bool = False) -> None:
    """Locality (NLL tasks: share of answer-token argmax unchanged) and drawdown (ConvSent: KL)."""
    lb = _probe_batch(records, tok, "locality", max_length, list(range(len(records))), generated=generated)
    if lb is None:
        return
    pre, post = fwd.logits(lb, False), fwd.logits(lb, True)
    lrow = losses.answer_rows(lb.answer_mask)
    same = losses.per_row_mean((pre.argmax(-1) == post.argmax(-1)).float(), lrow, len(lb))
    kl = losses.kl_pre_post(pre, post, lrow, len(lb))
    B = len(records)
    loc = losses.per_row_mean(same, lb.row_edit, B)
    dd = losses.per_row_mean(kl, lb.row_edit, B)
    for e in sorted(set(lb.row_edit.tolist())):
        if records[e].sentiment is None:
            results[e]["locality"] = float(loc[e])
        else:
            results[e]["dd"] = float(dd[e])


def _score_generation(records, tok, fwd: Forward, max_length: int, results: list[dict], gen_tokens: int) -> None:
    """reliability_gen / generalization_gen (greedy from the plain prompt and rephrases starts
    with the target) and locality_gen (greedy continuation of unrelated prompts unchanged)."""
    nll = [i for i, r in enumerate(records) if r.sentiment is None]
    if not nll:
        return
    probes = [(e, "reliability_gen", records[e].prompt) for e in nll]
    probes += [(e, "generalization_gen", p) for e in nll for p in records[e].rephrase_prompts]
    n_new = gen_tokens or generation.answer_tokens(tok, [records[e].target_new for e in nll]) + 2
    ids = generation.encode_prompts(tok, [p for _, _, p in probes], max_length)
    texts = generation.decode(tok, fwd.generate(ids, [e for e, _, _ in probes], n_new, True))
    got: dict[tuple[int, str], list[float]] = defaultdict(list)
    for (e, metric, _), text in zip(probes, texts):
        got[(e, metric)].append(float(generation.starts_with(text, [records[e].target_new])))
    loc = [(e, p.prompt, p.answer[:1]) for e in nll for p in records[e].locality]
    if loc:
        n_loc = gen_tokens or generation.answer_tokens(tok, [a for _, _, ans in loc for a in ans]) + 2
        lids = generation.encode_prompts(tok, [p for _, p, _ in loc], max_length)
        row_edit = [e for e, _, _ in loc]
        for e, same in zip(row_edit, fwd.unchanged(lids, row_edit, n_loc)):
            got[(e, "locality_gen")].append(float(same))
    for (e, metric), v in got.items():
        results[e][metric] = _mean(v)


def score(records, tok, fwd: Forward, max_length: int, options: EvalOptions) -> list[dict]:
    """Per-case metric dicts for `records`, edit e belonging to records[e]."""
    results = [{"case_id": r.case_id, "task": r.task, "instruction_id": r.instruction_id} for r in records]
    variants = [("", False)] + ([(INSTRUCTED, True)] if options.instructed_probes else [])
    for suffix, instructed in variants:
        _score_nll(records, tok, fwd, max_length, results, suffix, instructed, options.generation)
        _score_sentiment(records, tok, fwd, max_length, results, suffix, instructed)
    # locality prompts are generated from for NLL tasks only (ConvSent's are drawdown probes)
    _score_unrelated(records, tok, fwd, max_length, results,
                     options.generation and any(r.sentiment is None for r in records))
    if options.generation:
        _score_generation(records, tok, fwd, max_length, results, options.gen_tokens)
    return results


@torch.no_grad()
def evaluate_batch(editor, records, make_edits: MakeEdits, max_length: int = 128,
                   options: EvalOptions | None = None, share_prefixes: bool = True) -> list[dict]:
    """Per-case metric dicts for `records`, each edited independently. `share_prefixes`: run
    shared prefixes through the lower blocks once (BatchedForward); off only to measure it."""
    options = options or EvalOptions()
    eb = edit_batch(records, editor.tokenizer, max_length, instructed=options.instructed_edit)
    if share_prefixes and options.instructed_edit:
        eb = mark_prefixes(eb, editor.tokenizer, records, instructed=True, prompts=False)
    with torch.enable_grad():
        edits = make_edits(eb, editor.lower(eb))
    return score(records, editor.tokenizer, BatchedForward(editor, edits, share_prefixes=share_prefixes),
                 max_length, options)

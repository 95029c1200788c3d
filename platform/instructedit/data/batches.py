"""Records -> token tensors.

A `TokenBatch` holds rows of (prompt, answer) pairs, right-padded, with the positions whose logits
predict each answer token. Every row belongs to one edit (`row_edit`), so a batch of B independent
edits can carry any number of probe rows per edit (rephrases, locality prompts, sentiment
sentences) and the editor applies edit `row_edit[r]` to row r.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (N, L)
    attention_mask: torch.Tensor  # (N, L)
    answer_mask: torch.Tensor  # (N, L) bool: logits at t predict an answer token (input_ids[t+1])
    answer_ids: torch.Tensor  # (N, L) the token predicted at t (0 where answer_mask is False)
    row_edit: torch.Tensor  # (N,) index of the edit this row belongs to
    row_probe: torch.Tensor  # (N,) index of the probe within the batch (alias rows share a probe)
    meta: list[dict] = field(default_factory=list)  # per row: kind, case_id, ...
    # per row: token counts at which its leading ids may be shared with other rows (an instruction,
    # a prompt many rows continue); the lower blocks run each shared prefix once (editor/split.py)
    prefixes: list[tuple[int, ...]] | None = None
    # (N,) per edit row: the token count of its instruction prefix (instruction_cuts), 0 for a
    # plain row; set by edit_batch, so an editor can leave the instruction out of the edit
    # (editor.edit_tokens: input). None on rows not built by edit_batch (probes).
    instruction_len: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.answer_mask.to(device),
            self.answer_ids.to(device), self.row_edit.to(device), self.row_probe.to(device), self.meta,
            self.prefixes, self.instruction_len.to(device) if self.instruction_len is not None else None,
        )

    def select(self, rows: torch.Tensor | list[int]) -> TokenBatch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        keep = self.attention_mask[idx].sum(0) > 0
        width = int(keep.nonzero().max()) + 1 if keep.any() else 1
        return TokenBatch(
            self.input_ids[idx, :width], self.attention_mask[idx, :width], self.answer_mask[idx, :width],
            self.answer_ids[idx, :width], self.row_edit[idx], self.row_probe[idx],
            [self.meta[i] for i in idx.tolist()] if self.meta else [],
            [self.prefixes[i] for i in idx.tolist()] if self.prefixes is not None else None,
            self.instruction_len[idx.to(self.instruction_len.device)] if self.instruction_len is not None else None,
        )


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def encode_pairs(
    tokenizer,
    prompts: list[str],
    answers: list[str],
    row_edit: list[int],
    row_probe: list[int] | None = None,
    meta: list[dict] | None = None,
    max_length: int = 128,
) -> TokenBatch:
    """Tokenise prompt and answer apart (the answer with a leading space) so the answer tokens are
    exact whatever the tokenizer merges; an over-long prompt is cut from the left."""
    rows = []
    for prompt, answer in zip(prompts, answers):
        p = _encode(tokenizer, prompt, special=True)
        a = _encode(tokenizer, " " + answer.strip(), special=False) if answer.strip() else []
        if not a:
            raise ValueError(f"empty answer for prompt {prompt[:60]!r}")
        a = a[: max(1, max_length - 1)]
        p = p[-(max_length - len(a)):] if len(p) + len(a) > max_length else p
        if not p:  # the model needs at least one token to predict the first answer token from
            p = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        rows.append((p, a))
    n = len(rows)
    width = max(len(p) + len(a) for p, a in rows) if rows else 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    answer_mask = torch.zeros((n, width), dtype=torch.bool)
    answer_ids = torch.zeros((n, width), dtype=torch.long)
    for r, (p, a) in enumerate(rows):
        ids = p + a
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        # logits at position t predict token t+1: answer token j sits at len(p)+j, predicted at len(p)+j-1
        pos = torch.arange(len(p) - 1, len(p) - 1 + len(a))
        answer_mask[r, pos] = True
        answer_ids[r, pos] = torch.tensor(a)
    return TokenBatch(
        input_ids, attention, answer_mask, answer_ids,
        torch.tensor(row_edit, dtype=torch.long),
        torch.tensor(row_probe if row_probe is not None else list(range(n)), dtype=torch.long),
        meta or [{} for _ in range(n)],
    )


# ------------------------------------------------------------------------- records -> batches
def instructed(record, prompt: str) -> str:
    """A probe prompt with the record's instruction (rephrase/portability); plain if it has none."""
    if not record.instruction:
        return prompt
    from .instructions import apply_template, task_config

    return apply_template(task_config(record.task), record.instruction, prompt)


def instruction_prefix(record) -> str:
    """The text every instructed input of `record` starts with: its edit input up to the prompt,
    without trailing whitespace ("" without an instruction). Read off the edit input, not the
    task's template, so a record tagged with any template (the edit API's generic one) has it."""
    at = record.edit_input.rfind(record.prompt) if record.instruction and record.prompt else -1
    return record.edit_input[:at].rstrip() if at > 0 else ""


def instruction_cuts(batch: TokenBatch, tokenizer, records) -> list[int]:
    """Per row: the token count of its record's instruction prefix, where the row's ids start with
    the prefix's own ids (so the ids are the ones the row was tokenised to either way) and its
    prompt goes on after it; 0 elsewhere (a plain row, a prompt cut from the left)."""
    plen = (batch.answer_mask.float().argmax(1) + 1).tolist()  # the first answer logit sits on the prompt's last token
    pre_ids: dict[str, list[int]] = {}
    out = []
    for r, (row, p) in enumerate(zip(batch.input_ids, plen)):
        text = instruction_prefix(records[int(batch.row_edit[r])])
        if text and text not in pre_ids:
            pre_ids[text] = tokenizer(text, add_special_tokens=True)["input_ids"]
        pre = pre_ids.get(text, [])
        out.append(len(pre) if pre and len(pre) < p and row[: len(pre)].tolist() == pre else 0)
    return out


def mark_prefixes(batch: TokenBatch, tokenizer, records, instructed: bool, prompts: bool = True,
                  all_prompts: bool = False) -> TokenBatch:
    """`batch` with per-row shared-prefix cut points: after the record's instruction prefix
    (`instructed`; instruction_cuts) and after the prompt when `prompts` and another row of the
    batch starts with the same prompt ids (ConvSent sentences, portability aliases), or after
    every prompt with `all_prompts` (prompts generated from later)."""
    plen = (batch.answer_mask.float().argmax(1) + 1).tolist()
    ids = [row[:n].tolist() for row, n in zip(batch.input_ids, batch.attention_mask.sum(1).tolist())]
    count: dict[tuple, int] = {}
    for r, p in zip(ids, plen):
        count[tuple(r[:p])] = count.get(tuple(r[:p]), 0) + 1
    if not instructed:
        cut = [0] * len(ids)
    elif batch.instruction_len is not None:  # an edit_batch has them already: not tokenised twice
        cut = batch.instruction_len.tolist()
    else:
        cut = instruction_cuts(batch, tokenizer, records)
    out = []
    for row, p, c in zip(ids, plen, cut):
        cuts = [c] if c else []
        if all_prompts or (prompts and count[tuple(row[:p])] > 1):
            cuts.append(p)
        out.append(tuple(cuts))
    return dataclasses.replace(batch, prefixes=out)


def edit_batch(records, tokenizer, max_length: int = 128, instructed: bool = True) -> TokenBatch:
    """Row e = edit e: the edit input followed by the new target, with its instruction prefix
    length (instruction_len). `instructed`: the record's instruction-tagged edit input
    (instruction-trained methods); else the plain prompt."""
    batch = encode_pairs(
        tokenizer, [(r.edit_input if instructed else "") or r.prompt for r in records],
        [r.target_new for r in records],
        row_edit=list(range(len(records))),
        meta=[{"kind": "edit", "case_id": r.case_id, "task": r.task, "subject": r.subject} for r in records],
        max_length=max_length,
    )
    cuts = instruction_cuts(batch, tokenizer, records) if instructed else [0] * len(records)
    return dataclasses.replace(batch, instruction_len=torch.tensor(cuts, dtype=torch.long))


PROBE_KINDS = ("prompt", "rephrase", "portability", "locality", "sentiment")


def probe_batch(records, tokenizer, kind: str, max_length: int = 128, limit: int | None = None,
                all_aliases: bool = True, pick: int | None = None, instructed_probe: bool = False
                ) -> TokenBatch | None:
    """Rows for one probe kind of every record, each row tied to its record's edit.

    kind: prompt (the edit's own question, answer = target_new; NLL tasks), rephrase (answer =
    target_new), portability (one row per alias, a probe counts as correct if any alias is),
    locality (first alias, since locality compares pre and post predictions), sentiment (the topic
    question followed by each good and bad sentence, meta["good"] tells which; the edit's own
    target sentence is left out, so an edit is never scored on the sentence it was made from).
    Probes are plain, as a user asks them; `instructed_probe` puts the record's instruction on
    prompt, rephrase, portability and sentiment probes (never on locality: it measures what the
    edit did to unrelated inputs). `limit` caps probes per record; `pick` selects one probe per
    record by index (mod count), for training batches.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; known: {PROBE_KINDS}")

    def q(r, prompt: str) -> str:
        return instructed(r, prompt) if instructed_probe else prompt

    prompts, answers, row_edit, row_probe, meta = [], [], [], [], []
    probe_id = 0
    for e, r in enumerate(records):
        items: list[tuple[str, list[str], dict]] = []
        if kind == "prompt":
            if r.sentiment is None:
                items = [(q(r, r.prompt), [r.target_new], {})]
        elif kind == "rephrase":
            items = [(q(r, p), [r.target_new], {}) for p in r.rephrase_prompts]
        elif kind == "locality":
            items = [(p.prompt, p.answer[:1], {"probe_kind": p.kind}) for p in r.locality]
        elif kind == "portability":
            items = [(q(r, p.prompt), p.answer if all_aliases else p.answer[:1],
                      {"probe_kind": p.kind}) for p in r.portability]
        elif kind == "sentiment" and r.sentiment is not None:
            prompt = q(r, r.prompt)
            items = [(prompt, [s], {"good": True}) for s in r.sentiment.good if s != r.target_new] + \
                    [(prompt, [s], {"good": False}) for s in r.sentiment.bad]
        items = [it for it in items if any(a.strip() for a in it[1])]
        if pick is not None and items:
            items = [items[pick % len(items)]]
        if limit is not None and kind != "sentiment":
            items = items[:limit]
        if kind == "sentiment" and limit is not None:
            good = [it for it in items if it[2]["good"]][:limit]
            bad = [it for it in items if not it[2]["good"]][:limit]
            items = good + bad
        for prompt, alias_list, m in items:
            for a in alias_list:
                if not a.strip():
                    continue
                prompts.append(prompt)
                answers.append(a)
                row_edit.append(e)
                row_probe.append(probe_id)
                meta.append({"kind": kind, "case_id": r.case_id, "task": r.task, **m})
            probe_id += 1
    if not prompts:
        return None
    return encode_pairs(tokenizer, prompts, answers, row_edit, row_probe, meta, max_length)

"""The one-record-at-a-time reference: the oracle the batched path is tested and timed against.

One record: compute its edit, apply it densely to the plain model (editor.apply), run whole-model
forwards and generations, revert. The metric definitions are core.score's, so a difference from
core.evaluate_batch can only come from the batched mechanics (patched rows, shared lower blocks,
padding), which is what the tests compare.
"""

from __future__ import annotations

import contextlib

import torch

from ..data.batches import TokenBatch, edit_batch
from ..editor import losses
from . import generation
from .core import EvalOptions, MakeEdits, score


class DenseForward:
    """Whole-model forwards with the edit summed into the weights for post-edit passes."""

    def __init__(self, editor, edits):
        self.editor, self.edits = editor, edits

    @contextlib.contextmanager
    def _weights(self, post: bool):
        handle = self.editor.apply(self.edits) if post and self.edits else None
        try:
            yield
        finally:
            if handle is not None:
                handle.revert()

    def logits(self, batch: TokenBatch, post: bool) -> torch.Tensor:
        dev = self.editor.device
        with self._weights(post):
            out = self.editor.model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                                    use_cache=False)
        return out.logits[batch.answer_mask.to(dev)]

    def logprobs(self, batch: TokenBatch, post: bool) -> torch.Tensor:
        ids = batch.answer_ids[batch.answer_mask].to(self.editor.device)
        return losses.token_logprobs(self.logits(batch, post), ids)

    def generate(self, prompt_ids, row_edit, new_tokens, post):
        with self._weights(post):  # one record: every row carries the same edit
            return [generation.greedy(self.editor.model, self.editor.tokenizer, [p], new_tokens)[0]
                    for p in prompt_ids]

    def unchanged(self, prompt_ids, row_edit, new_tokens):
        before = self.generate(prompt_ids, row_edit, new_tokens, False)
        return [a == b for a, b in zip(before, self.generate(prompt_ids, row_edit, new_tokens, True))]


@torch.no_grad()
def reference_evaluate(editor, record, make_edits: MakeEdits, max_length: int = 128,
                       options: EvalOptions | None = None) -> dict:
    options = options or EvalOptions()
    eb = edit_batch([record], editor.tokenizer, max_length, instructed=options.instructed_edit).to(editor.device)
    with torch.enable_grad():
        edits = make_edits(eb, editor.lower(eb))
    return score([record], editor.tokenizer, DenseForward(editor, edits), max_length, options)[0]

"""Shared prefixes through the lower blocks (SplitModel.lower(prefixes=), prefix_states,
generation.greedy_split): the same hidden states and continuations as running every row whole,
and a wrong cache entry shows (the cache is read, not silently recomputed)."""

import pytest
import torch
from instructedit.editor.split import SplitModel
from instructedit.evaluate import generation
from instructedit.models import build_model
from token_rows import right_padded

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def split(request):
    loaded = build_model(request.param)
    n = len(SplitModel(loaded.model, loaded.config, 1).blocks)
    return SplitModel(loaded.model, loaded.config, n - 1), loaded.tokenizer


def _rows():
    g = torch.Generator().manual_seed(0)
    instr = torch.randint(5, 100, (12,), generator=g).tolist()  # an instruction many rows start with
    prompt = torch.randint(5, 100, (7,), generator=g).tolist()  # a prompt several sentences continue
    rows = [instr + prompt + [1, 2, 3], instr + prompt + [4, 5], instr + [9, 8, 7, 6, 5, 4], [11, 12, 13],
            instr + prompt + [7] * 9, [3] * 5 + instr]  # the last: the ids appear, but not as a prefix
    cuts = [(12, 19), (12, 19), (12,), (), (12, 19), (5,)]
    ids, att = right_padded(rows)
    return rows, cuts, ids, att


def _max_diff(a, b, rows):
    return max(float((a[i, : len(r)] - b[i, : len(r)]).abs().max()) for i, r in enumerate(rows))


def test_prefixed_lower_equals_whole_rows_and_reuses_the_cache(split):
    sp, _ = split
    sp.clear_shared()
    rows, cuts, ids, att = _rows()
    whole = sp.lower(ids, att)
    first = sp.lower(ids, att, cuts)
    assert sp.shared_misses > 0 and len(sp._shared) >= 3  # instruction, instruction + prompt, [3]*5
    hits = sp.shared_hits
    again = sp.lower(ids, att, cuts)  # every prefix from the cache now
    assert sp.shared_hits - hits == sum(1 for c in cuts if c)
    assert _max_diff(whole, first, rows) < 1e-5
    assert _max_diff(whole, again, rows) < 1e-5


def test_a_wrong_cache_entry_changes_the_states(split):
    sp, _ = split
    sp.clear_shared()
    rows, cuts, ids, att = _rows()
    whole = sp.lower(ids, att)
    sp.lower(ids, att, cuts)
    key = tuple(rows[0][:19])
    entry = sp._shared[key]
    saved = [(k.clone(), v.clone()) for k, v in entry.kv]
    for _, v in entry.kv:
        v.add_(1.0)  # the values of instruction + prompt, wrong
    try:
        got = sp.lower(ids, att, cuts)
    finally:
        for (k, v), (k0, v0) in zip(entry.kv, saved):
            k.copy_(k0)
            v.copy_(v0)
    assert float((got[0, 19:22] - whole[0, 19:22]).abs().max()) > 1e-3  # the continuation attends to them
    assert float((got[3, :3] - whole[3, :3]).abs().max()) < 1e-5  # a row without the prefix is untouched
    sp.clear_shared()


def test_greedy_split_equals_greedy(split):
    sp, tok = split
    sp.clear_shared()
    prompts = generation.encode_prompts(tok, ["The capital of France is", "Hi", "A longer prompt about the weather in"],
                                        64)
    want = generation.greedy(sp.model, tok, prompts, 10)
    assert generation.greedy_split(sp, tok, prompts, 10) == want
    hits = sp.shared_hits
    assert generation.greedy_split(sp, tok, prompts, 10) == want  # lower blocks from the cache
    assert sp.shared_hits - hits == len(prompts)
    # the upper prefill's last-position logits are the whole model's
    heads = sp.prefix_states(prompts[:1])
    mask = torch.ones(1, len(prompts[0]), dtype=torch.long)
    final, _ = sp.upper_prefill(heads[0].hidden[None], mask, torch.arange(len(prompts[0]))[None])
    full = sp.model(input_ids=torch.tensor(prompts[:1]), use_cache=False).logits[0, -1]
    assert torch.allclose(sp.head(final[0, -1]), full, atol=1e-4)


@pytest.mark.parametrize("scale", [0.0, 0.3, 30.0])
def test_unchanged_split_equals_comparing_two_greedy_runs(split, scale):
    """Joint before/after decoding with shared lower blocks decides each prompt as comparing the
    two full continuations does: no edit (all the same), a small one, a large one (most differ)."""
    from instructedit.editor.hooks import LowRankEdit, patched

    sp, tok = split
    sp.clear_shared()
    top = sp.blocks[sp.split_at]
    layer = next(m for m in top.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    w = layer.weight
    d_in, d_out = (w.shape[1], w.shape[0]) if isinstance(layer, torch.nn.Linear) else (w.shape[0], w.shape[1])
    g = torch.Generator().manual_seed(1)
    edits = {"x": LowRankEdit(scale * torch.randn(4, 2, d_in, generator=g), torch.randn(4, 2, d_out, generator=g))}
    layers = {"x": layer}
    texts = ["The capital of France is", "Hi", "A longer prompt about the weather in", "One two three", "Paris"]
    prompts = generation.encode_prompts(tok, texts, 64)
    row_edit = [0, 1, 2, 3, 0]

    def edited(rows):
        return patched(layers, edits, torch.tensor([row_edit[r] for r in rows]))

    before = generation.greedy(sp.model, tok, prompts, 9)
    with edited(range(len(prompts))):
        after = generation.greedy(sp.model, tok, prompts, 9)
    want = [a == b for a, b in zip(before, after)]
    assert generation.unchanged_split(sp, tok, prompts, 9, edited) == want
    if scale == 0.0:
        assert all(want)
    if scale == 30.0:
        assert not all(want)

"""Each metric on hand-made logits with known answers."""

import pytest
import torch
from instructedit.data.batches import TokenBatch
from instructedit.editor import losses
from instructedit.editor.losses import sentiment_scores
from instructedit.evaluate import metrics
from instructedit.evaluate.core import _per_probe, edit_success
from instructedit.evaluate.runner import summary_metrics


def onehot(ids, vocab=5, scale=10.0):
    return torch.nn.functional.one_hot(torch.tensor(ids), vocab).float() * scale


def test_token_accuracy_reliability():
    # two rows: row 0 has 3 answer tokens (2 right), row 1 has 1 (right)
    logits = onehot([1, 2, 0, 4])
    ids = torch.tensor([1, 2, 3, 4])
    rows = torch.tensor([0, 0, 0, 1])
    acc = losses.token_accuracy(logits, ids, rows, 2)
    assert acc.tolist() == pytest.approx([2 / 3, 1.0])


def test_alias_any_counts():
    # probe 0 has two alias rows (first wrong, second right) -> 1; probe 1 one wrong row -> 0
    values = torch.tensor([0.0, 1.0, 0.0])
    batch = TokenBatch(*(torch.zeros(3, 2),) * 4, row_edit=torch.tensor([0, 0, 0]), row_probe=torch.tensor([0, 0, 1]))
    assert _per_probe(values, batch, "max") == {0: 1.0, 1: 0.0}


def test_locality_share_unchanged():
    pre = onehot([1, 2, 3, 4])
    post = onehot([1, 0, 3, 0])
    rows = torch.tensor([0, 0, 1, 1])
    same = losses.per_row_mean((pre.argmax(-1) == post.argmax(-1)).float(), rows, 2)
    assert same.tolist() == [0.5, 0.5]


def test_drawdown_kl_known_value():
    pre = torch.log(torch.tensor([[0.5, 0.5]]))
    post = torch.log(torch.tensor([[0.25, 0.75]]))
    kl = losses.kl_pre_post(pre, post, torch.tensor([0]), 1)
    want = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert float(kl[0]) == pytest.approx(float(want), abs=1e-6)
    assert float(losses.kl_pre_post(pre, pre, torch.tensor([0]), 1)[0]) == pytest.approx(0.0, abs=1e-7)


def test_edit_success_es():
    # edit 0: good sentence likely, bad unlikely -> ES 1; edit 1: reverse -> 0
    n = 4
    ids = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 2]])
    mask = torch.tensor([[True, False]] * n)
    answer_ids = torch.zeros(n, 2, dtype=torch.long)
    answer_ids[:, 0] = ids[:, 1]
    batch = TokenBatch(ids, torch.ones(n, 2), mask, answer_ids, row_edit=torch.tensor([0, 0, 1, 1]),
                       row_probe=torch.arange(n), meta=[{"good": g} for g in (True, False, True, False)])
    logits = torch.stack([onehot([1], 3)[0], onehot([1], 3)[0], onehot([2], 3)[0], onehot([2], 3)[0]])
    _, ok = sentiment_scores(logits, batch, 2)
    assert ok.tolist() == [1.0, 0.0]


def test_registry_directions():
    assert metrics.higher_is_better("test/zsre/reliability")
    assert metrics.higher_is_better("test/counterfact/portability/reasoning")
    assert not metrics.higher_is_better("test/convsent/dd")
    assert not metrics.get("dd").higher_is_better
    with pytest.raises(KeyError):
        metrics.get("nope")


def test_summary_keys_follow_conventions():
    rows = [
        {"case_id": "a", "task": "counterfact", "reliability": 1.0, "locality": 0.5, "portability/reasoning": 1.0},
        {"case_id": "b", "task": "counterfact", "reliability": 0.0, "locality": 1.0, "portability/reasoning": 0.0},
        {"case_id": "c", "task": "convsent", "es": 1.0, "dd": 0.2},
    ]
    m = summary_metrics(rows, "test")
    assert m["test/counterfact/reliability"] == 0.5
    assert m["test/counterfact/portability/reasoning"] == 0.5
    assert m["test/convsent/es"] == 1.0 and m["test/convsent/dd"] == pytest.approx(0.2)
    assert m["test/avg/reliability"] == 0.5
    assert m["test/avg/edit_success"] == pytest.approx(0.75)  # mean over tasks of reliability | es
    assert edit_success(rows[2]) == 1.0

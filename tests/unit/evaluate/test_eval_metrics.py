"""Each metric on hand-made logits with known answers."""

import math

import pytest
import torch
from instructedit.editor import losses
from instructedit.evaluate import metrics
from instructedit.evaluate.core import es_sentiment
from instructedit.evaluate.metrics import edit_success
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


def test_convsent_es_equals_hand_computed_serac_formula():
    # tokens of one edit: two of target-sentiment sentences, one of the other sentiment
    good = torch.tensor([True, True, False])
    post = torch.tensor([-1.0, -2.0, -3.0])
    pre = torch.tensor([-2.0, -2.0, -1.0])
    # z_sent = sigmoid(-1.5 - -3) = sigmoid(1.5); z_topic = min(1, exp(-1.5 - -2)) = 1
    assert es_sentiment(pre, post, good) == pytest.approx(1 / (1 + math.exp(-1.5)), abs=1e-6)
    # the good sentences became less likely than before: z_topic = exp(-1.5 - -1) = exp(-0.5)
    pre_likely = torch.tensor([-1.0, -1.0, -1.0])
    assert es_sentiment(pre_likely, post, good) == pytest.approx(math.exp(-0.5) / (1 + math.exp(-1.5)), abs=1e-6)
    # bad sentences winning gives ES < 0.5 even when the good ones rose
    assert es_sentiment(torch.tensor([-9.0, -9.0, -9.0]), torch.tensor([-4.0, -4.0, -1.0]), good) < 0.05
    assert math.isnan(es_sentiment(pre, post, torch.tensor([True, True, True])))  # no contrast: undefined


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


def test_instructed_variants_are_registered_after_headline_metrics():
    assert metrics.get("reliability").headline and not metrics.get("reliability_instructed").headline
    assert metrics.order(["es_instructed", "reliability_instructed", "reliability", "dd"]) == \
        ["reliability", "dd", "reliability_instructed", "es_instructed"]
    assert metrics.base_name("test/zsre/reliability_instructed_ci_low") == "reliability_instructed"
    assert not metrics.higher_is_better("test/convsent/dd_ci_high")
    assert metrics.get("dd").scale == 1.0 and metrics.get("locality_gen").scale == 100.0


def test_summary_carries_intervals_and_n():
    rows = [{"case_id": str(i), "task": "zsre", "reliability": float(i % 2)} for i in range(40)]
    rows += [{"case_id": "c", "task": "convsent", "es": 0.25}]
    s = metrics.task_summary(rows)
    est = s["zsre"]["reliability"]
    assert est["n"] == 40 and est["mean"] == 0.5 and est["ci_low"] < 0.5 < est["ci_high"]
    assert s["convsent"]["es"] == {"mean": 0.25, "ci_low": 0.25, "ci_high": 0.25, "n": 1}
    assert s["avg"]["edit_success"]["n"] == 41 and s["avg"]["edit_success"]["mean"] == pytest.approx(0.375)
    flat = metrics.flat_metrics(s, "test")
    assert flat["test/zsre/reliability_n"] == 40.0 and "test/avg/reliability_ci_low" in flat

"""Bootstrap intervals on samples whose answer is known."""

import numpy as np
import pytest
from instructedit.evaluate import stats


def test_interval_of_a_known_binary_sample():
    # 100 cases, half successes: the normal-approximation 95% interval is 0.5 +- 1.96 * 0.05
    values = [0.0, 1.0] * 50
    est = stats.bootstrap(values, seed=0)
    assert est.mean == 0.5 and est.n == 100
    assert est.ci_low == pytest.approx(0.402, abs=0.02) and est.ci_high == pytest.approx(0.598, abs=0.02)
    assert stats.bootstrap(values, seed=0) == est  # seeded: the same interval every time
    assert stats.bootstrap([0.7] * 10).as_dict() == {"mean": 0.7, "ci_low": pytest.approx(0.7),
                                                     "ci_high": pytest.approx(0.7), "n": 10}


def test_interval_narrows_with_more_cases_and_skips_nan():
    small = stats.bootstrap([0.0, 1.0] * 10)
    large = stats.bootstrap([0.0, 1.0] * 500)
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 4
    assert stats.bootstrap([1.0, float("nan"), 0.0]).n == 2
    assert stats.bootstrap([]).n == 0


def test_seed_matrix_widens_the_interval():
    cases = np.array([0.0, 1.0] * 50)
    one = stats.bootstrap(cases)
    # three training seeds that disagree by +-0.2 on every case: seed variation adds width
    three = stats.bootstrap(np.stack([cases * 0.6, cases * 0.6 + 0.2, cases * 0.6 + 0.4]))
    assert three.n == 100 and three.mean == pytest.approx(0.5)
    assert (three.ci_high - three.ci_low) > (one.ci_high - one.ci_low) * 0.6 * 1.05


def test_paired_difference():
    rng = np.random.default_rng(1)
    b = rng.random(200)
    assert stats.paired(b + 0.1, b).as_dict() == pytest.approx({"mean": 0.1, "ci_low": 0.1, "ci_high": 0.1, "n": 200})
    # pairing removes the case-to-case spread: the paired interval is much narrower than unpaired ones
    a = b + rng.normal(0.05, 0.01, 200)
    d = stats.paired(a, b)
    assert 0.045 < d.ci_low < d.mean < d.ci_high < 0.055
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0])


def test_paired_over_the_same_editors_draws_seeds_jointly():
    """Seed s of both sides is one editor under two conditions: its seed effect cancels in the
    difference, where drawing each side's seeds separately counts it twice."""
    rng = np.random.default_rng(2)
    base = (rng.random(100) < 0.5).astype(float)
    b = np.stack([base * 0.5 + shift for shift in (0.0, 0.2, 0.4)])  # seeds disagree strongly
    a = b + 0.05
    joint = stats.paired(a, b, same_seeds=True)
    assert joint.as_dict() == pytest.approx({"mean": 0.05, "ci_low": 0.05, "ci_high": 0.05, "n": 100})
    apart = stats.paired(a, b)
    assert apart.mean == pytest.approx(0.05) and apart.ci_high - apart.ci_low > 0.2
    # one seed: the same draws as the plain paired difference
    x, y = rng.random(50), rng.random(50)
    assert stats.paired(x, y, same_seeds=True).as_dict() == pytest.approx(stats.paired(x, y).as_dict())
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired(a, b[:2], same_seeds=True)


def test_stratified_macro_average():
    est = stats.stratified([[1.0] * 10, [0.0, 1.0] * 50])
    assert est.mean == pytest.approx(0.75) and est.n == 110 and est.ci_low < 0.75 < est.ci_high

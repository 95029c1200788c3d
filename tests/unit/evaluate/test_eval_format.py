"""The one rounding rule for printed metric values (evaluate/metrics.py): decimals from n, the scale
from the registry, `mean [low, high]` wherever an interval is shown."""

import pytest
from instructedit.evaluate.metrics import MISSING, decimals_for_n, format_estimate, format_value


@pytest.mark.parametrize("n, decimals", [(None, 0), (16, 0), (99, 0), (100, 0), (999, 0), (1000, 1),
                                         (5000, 1), (99_999, 1), (100_000, 2), (float("nan"), 0)])
def test_decimals_follow_n(n, decimals):
    assert decimals_for_n(n) == decimals


def test_format_value_scales_from_the_registry():
    assert format_value(0.123456, 16, "reliability") == "12"
    assert format_value(0.123456, 2000, "reliability") == "12.3"
    assert format_value(0.123456, 200_000, "reliability_instructed") == "12.35"
    assert format_value(0.0123, 16, "dd") == "0.01"  # a KL, shown as it is, two more decimals
    assert format_value(0.0123, 2000, "dd") == "0.012"
    assert format_value(0.5, 2000, "test/zsre/dd_ci_low") == "0.500"  # a tracked key: its metric's scale
    assert format_value(float("nan"), 16, "reliability") == format_value(None) == MISSING


def test_format_estimate_mean_and_interval():
    assert format_estimate(0.5, 0.25, 0.75, 16, "reliability") == "50 [25, 75]"
    assert format_estimate(0.5, 0.3, 0.7, 1600, "reliability") == "50.0 [30.0, 70.0]"
    assert format_estimate(0.0123, 0.01, 0.02, 40, "dd") == "0.01 [0.01, 0.02]"
    assert format_estimate(0.5, None, None, 16, "locality") == "50"  # no interval known: the mean alone
    assert format_estimate(0.5, float("nan"), 0.6, 16, "locality") == "50"
    assert format_estimate(None, 0.1, 0.2) == MISSING

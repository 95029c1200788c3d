"""Optuna for studies: a trial's objective is the study metric of its final report.

The study metric is a validation metric (spec.py), so every intermediate report carries it too; the
final report carries its value at the trial's best checkpoint (the one that is tested and exported),
which is the value Optuna should learn from. Intermediate reports are left to the scheduler (ASHA).
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from .trial import FINAL


class FinalMetricOptuna(OptunaSearch):
    """OptunaSearch that learns from a trial's final report only (the best checkpoint's value)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if FINAL in result and self.metric in result:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # A trial the scheduler stopped early ends on an intermediate report: Optuna records it as
        # pruned, not as complete with the value of an early validation.
        super().on_trial_complete(trial_id, result if result and FINAL in result else None, error)

"""Optuna for studies: the study metric comes only with a trial's final report (after its test)."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class FinalMetricOptuna(OptunaSearch):
    """OptunaSearch that skips intermediate results lacking the study metric (val-only reports)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)

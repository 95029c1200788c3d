"""The metric registry: every metric the platform reports, with its direction and meaning.

Values are computed batched in core.py (teacher-forced, token-level argmax accuracy); this module
is the single place that says what each name means and which way is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {}


def register(name: str, higher_is_better: bool, description: str) -> Metric:
    m = Metric(name, higher_is_better, description)
    METRICS[name] = m
    return m


register("reliability", True, "answer-token accuracy of the new target on the edit prompt after the edit")
register("generalization", True, "answer-token accuracy of the new target on rephrased prompts")
register("locality", True, "share of answer-token argmax predictions unchanged by the edit on unrelated prompts")
register("portability", True, "mean over portability kinds of answer-token accuracy (any alias counts)")
register("portability/reasoning", True, "portability on multi-hop reasoning prompts")
register("portability/subject_aliasing", True, "portability on prompts naming the subject by an alias")
register("portability/logical_generalization", True, "portability on logically implied prompts")
register("es", True, "ConvSent edit success: the edited model prefers target-sentiment sentences about the topic")
register("dd", False, "ConvSent drawdown: KL(pre || post) on prompts about other topics")


def get(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name]


def higher_is_better(key: str) -> bool:
    """Direction of a metric or of a tracked key such as `test/zsre/reliability`."""
    parts = key.split("/")
    for i in range(len(parts)):
        name = "/".join(parts[i:])
        if name in METRICS:
            return METRICS[name].higher_is_better
    return not key.startswith("loss")


def edit_success(row: dict) -> float | None:
    """The early-stopping key per case: reliability, or ES for ConvSent."""
    value = row.get("reliability")
    if _missing(value):  # missing, or NaN in a DataFrame row
        value = row.get("es")
    return None if _missing(value) else value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def task_means(rows, names: set[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-case rows -> {task: {metric: mean over the task's cases}}, plus `edit_success`.

    Missing and NaN values are skipped; `names` keeps only those metrics (default: every float).
    """
    sums: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        t = sums.setdefault(r["task"], {})
        for k, v in r.items():
            if isinstance(v, float) and not math.isnan(v) and k not in ("case_id", "task") and (names is None or k in names):
                t.setdefault(k, []).append(v)
        es = edit_success(r)
        if es is not None:
            t.setdefault("edit_success", []).append(es)
    return {task: {k: sum(v) / len(v) for k, v in ms.items()} for task, ms in sorted(sums.items())}

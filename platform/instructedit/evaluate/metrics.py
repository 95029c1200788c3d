"""The metric registry: every metric the platform reports, with its direction and meaning.

Values are computed batched in core.py (teacher-forced, token-level argmax accuracy); this module
is the single place that says what each name means and which way is better.
"""

from __future__ import annotations

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

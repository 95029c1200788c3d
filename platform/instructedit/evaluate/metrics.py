"""The metric registry: every metric the platform reports, one place for its facts.

Each metric says which way is better, how it is displayed (x100 for shares, as-is for a KL), the
probe it is measured on and where it comes from in the literature; evaluation, MLflow logging,
the tables and the report read it from here (docs/metrics.md is the prose version). Values are
computed in core.py. It also holds the one rounding rule every printed value follows
(`format_value`, `format_estimate`: the evaluate command, the comparison tables, the demo and
analysis/). Torch-free: analysis/ imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import stats

INSTRUCTED = "_instructed"
CI_SUFFIXES = ("_ci_low", "_ci_high", "_n")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    description: str
    probe: str = ""  # what the edited model is asked
    source: str = ""
    scale: float = 100.0  # display factor: shares are shown in percent
    headline: bool = True  # plain probes; False for instructed variants (extra columns)
    # a column of the comparison tables; False for a breakdown of another metric (portability per
    # kind) and for the selection key (edit_success)
    in_tables: bool = True


METRICS: dict[str, Metric] = {}


def register(name: str, higher_is_better: bool, description: str, probe: str = "", source: str = "",
             scale: float = 100.0, instructed: bool = False, in_tables: bool = True) -> Metric:
    m = Metric(name, higher_is_better, description, probe, source, scale, headline=True, in_tables=in_tables)
    METRICS[name] = m
    if instructed:  # the same metric on the record's instruction-tagged probe, for every method
        METRICS[name + INSTRUCTED] = Metric(name + INSTRUCTED, higher_is_better, description + " (instructed probe)",
                                            f"{probe}, prefixed by the task instruction", source, scale,
                                            headline=False, in_tables=in_tables)
    return m


_TF = "teacher-forced token-level argmax accuracy"
register("reliability", True, f"{_TF} of the new target after the edit", "the plain edit prompt",
         "MEND (Mitchell et al. 2022); KnowEdit 'Edit Succ.'", instructed=True)
register("generalization", True, f"{_TF} of the new target on rephrases of the prompt (mean over rephrases)",
         "plain rephrases", "MEND; KnowEdit", instructed=True)
register("portability", True, f"mean over portability kinds of {_TF} (any alias counts)",
         "plain reasoning / subject-alias / logical-generalisation questions", "KnowEdit (Zhang et al. 2024)",
         instructed=True)
for _kind in ("reasoning", "subject_aliasing", "logical_generalization"):
    register(f"portability/{_kind}", True, f"portability on {_kind.replace('_', ' ')} prompts",
             f"plain {_kind.replace('_', ' ')} questions", "KnowEdit", instructed=True, in_tables=False)
register("locality", True, "share of answer-token argmax predictions unchanged by the edit on unrelated prompts",
         "plain unrelated prompts (never instructed)", "MEND 'drawdown' as accuracy; KnowEdit 'Locality'")
register("es", True, "ConvSent edit success: sigmoid(mean logp good - mean logp bad) x min(1, exp(mean logp "
         "good post - pre)), target-sentiment sentences other than the edit's own", "the plain topic question",
         "SERAC (Mitchell et al. 2022) es_sentiment; EasyEdit", instructed=True)
register("dd", False, "ConvSent drawdown: KL(pre || post) per token on sentences about other topics of the same split",
         "plain questions about other topics", "SERAC ConvSent", scale=1.0)
register("reliability_gen", True, "greedy continuation of the plain prompt starts with the target",
         "the plain edit prompt", "generation-based evaluation (e.g. 'The Mirage of Model Editing', 2025)")
register("generalization_gen", True, "greedy continuation of plain rephrases starts with the target",
         "plain rephrases", "generation-based evaluation")
register("locality_gen", True, "greedy continuation of an unrelated prompt is unchanged by the edit",
         "plain unrelated prompts", "generation-based evaluation")
register("edit_success", True, "reliability, or ES for ConvSent: the selection key per case",
         "the plain edit prompt / topic question", "this platform", in_tables=False)


def get(name: str) -> Metric:
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    return METRICS[name]


def base_name(key: str) -> str:
    """`test/zsre/reliability_ci_low` -> `reliability`; the metric part of a tracked key."""
    parts = key.split("/")
    for i in range(len(parts)):
        name = "/".join(parts[i:])
        for suf in CI_SUFFIXES:
            if name.endswith(suf) and name[: -len(suf)] in METRICS:
                return name[: -len(suf)]
        if name in METRICS:
            return name
    return key


def higher_is_better(key: str) -> bool:
    """Direction of a metric or of a tracked key such as `test/zsre/reliability`."""
    name = base_name(key)
    if name in METRICS:
        return METRICS[name].higher_is_better
    return not key.startswith("loss")


def order(names) -> list[str]:
    """Registry order: plain (headline) metrics first, their instructed variants after."""
    rank = {n: i for i, n in enumerate(METRICS)}
    return sorted(dict.fromkeys(names), key=lambda n: (not METRICS[n].headline if n in METRICS else True,
                                                        rank.get(n, len(rank)), n))


# The columns of every comparison table (evaluate --compare-table, analysis' Table 3): the metrics
# the registry shows in tables, plain probes first, then instructed and generation-based.
TABLE_METRICS = tuple(order(name for name, m in METRICS.items() if m.in_tables))

DEFAULT_SCALE = 100.0  # a metric the registry does not know is shown as a share
MISSING = "–"  # a cell without a value


def scale_of(key: str) -> float:
    """Display factor of a metric or tracked key (`test/zsre/dd_ci_low`) from the registry; x100
    for what it does not know."""
    m = METRICS.get(base_name(key)) if key else None
    return m.scale if m is not None else DEFAULT_SCALE


def decimals_for_n(n: float | None) -> int:
    """Decimals of a percentage (a share x100) that a mean over `n` cases supports.

    The 95% interval of a share is about +-98/sqrt(n) points at worst (p = 0.5): +-10 points at
    n = 100, +-3 at n = 1,000, +-1 at n = 10,000. A digit finer than a tenth of that half-width is
    noise, so: whole percents below n = 1,000 (the interval is wider than 3 points), one decimal
    from 1,000 (the interval is 1 to 3 points wide), two from 100,000. Unknown n counts as small.
    """
    if n is None or not math.isfinite(float(n)) or n < 1000:
        return 0
    return 1 if n < 100_000 else 2


def format_value(value: float | None, n: float | None = None, metric: str = "") -> str:
    """A metric value for display: shares x100 rounded by `decimals_for_n`; metrics the registry
    shows unscaled (dd, a KL in nats) keep two more decimals, as their values sit below 1."""
    if _missing(value):
        return MISSING
    scale = scale_of(metric)
    digits = decimals_for_n(n) + (0 if scale != 1.0 else 2)
    return f"{value * scale:.{digits}f}"


def format_estimate(mean: float | None, ci_low: float | None = None, ci_high: float | None = None,
                    n: float | None = None, metric: str = "") -> str:
    """`mean [low, high]` by `format_value`; just the mean when the interval is not known."""
    text = format_value(mean, n, metric)
    if text == MISSING or _missing(ci_low) or _missing(ci_high):
        return text
    return f"{text} [{format_value(ci_low, n, metric)}, {format_value(ci_high, n, metric)}]"


def edit_success(row: dict) -> float | None:
    """The early-stopping key per case: reliability, or ES for ConvSent (plain probes)."""
    value = row.get("reliability")
    if _missing(value):  # missing, or NaN in a DataFrame row
        value = row.get("es")
    return None if _missing(value) else value


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def per_task_values(rows, names: set[str] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per-case rows -> {task: {metric: [value per case]}}, plus `edit_success`; NaN skipped."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        t = out.setdefault(r["task"], {})
        for k, v in r.items():
            if isinstance(v, float) and not math.isnan(v) and k in METRICS and (names is None or k in names):
                t.setdefault(k, []).append(v)
        es = edit_success(r)
        if es is not None:
            t.setdefault("edit_success", []).append(es)
    return dict(sorted(out.items()))


def task_means(rows, names: set[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-case rows -> {task: {metric: mean over the task's cases}}, plus `edit_success`."""
    return {task: {k: sum(v) / len(v) for k, v in ms.items()}
            for task, ms in per_task_values(rows, names).items()}


def task_summary(rows, seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per-case rows -> {task: {metric: {mean, ci_low, ci_high, n}}} with seeded 95% bootstrap
    intervals over cases; task `avg` is the macro average over tasks (stratified bootstrap)."""
    values = per_task_values(rows)
    out: dict[str, dict[str, dict]] = {}
    for task, ms in values.items():
        out[task] = {m: stats.bootstrap(v, seed).as_dict() for m, v in ms.items()}
    metric_names = order({m for ms in values.values() for m in ms})
    avg = {}
    for m in metric_names:
        groups = [ms[m] for ms in values.values() if m in ms]
        avg[m] = stats.stratified(groups, seed).as_dict()
    if avg:
        out["avg"] = avg
    return out


def flat_metrics(summary: dict[str, dict[str, dict]], split: str) -> dict[str, float]:
    """summary -> MLflow keys `<split>/<task>/<metric>` plus `_ci_low`, `_ci_high`, `_n`."""
    out: dict[str, float] = {}
    for task, ms in summary.items():
        for m, est in ms.items():
            key = f"{split}/{task}/{m}"
            out[key] = float(est["mean"])
            out[key + "_ci_low"] = float(est["ci_low"])
            out[key + "_ci_high"] = float(est["ci_high"])
            out[key + "_n"] = float(est["n"])
    return out

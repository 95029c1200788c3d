"""Synthetic but realistic tracked runs: the tags and metric names of docs/conventions.md, the numbers
shaped like the paper's (InstructEdit > multi-task MEND > single-task off-task, ...).

Evaluation metrics carry the interval keys of `instructedit evaluate` (`_ci_low`, `_ci_high`, `_n`;
n = N_CASES per task) and instructed variants, except the FT-L run, which logs means only (as older
runs do). Training runs log loss and val curves over steps with a best step and provenance tags.

Used by the analysis unit tests and tests/integration/test_report.py (loaded by file path).
"""

from __future__ import annotations

import numpy as np
from instructedit import tracking

TRAIN = ("counterfact", "recent", "convsent")
HOLD_OUT = "zsre"
FACT_METRICS = ("reliability", "generalization", "locality", "portability", "portability/reasoning")


N_CASES = 64  # test cases per task behind the synthetic intervals


def _task_metrics(task: str, level: float, rng, split: str = "test", intervals: bool = False) -> dict[str, float]:
    """Metrics of one test task at a quality `level` in [0, 1]; with `intervals`, each also gets
    `_ci_low`, `_ci_high` (a +-1.96 sd binomial band) and `_n`."""
    jitter = lambda: float(rng.uniform(-0.02, 0.02))
    if task == "convsent":
        vals = {"es": min(1.0, max(0.0, level + jitter())),
                "es_instructed": min(1.0, max(0.0, level + 0.03 + jitter())),
                "dd": max(0.0, 0.02 + 0.1 * (1 - level) + jitter() / 10)}
    else:
        vals = {
            "reliability": level,
            "generalization": 0.9 * level,
            "locality": 1.0 - 0.2 * level,
            "portability": 0.4 * level,
            "portability/reasoning": 0.35 * level,
            "reliability_instructed": level + 0.05,
        }
        vals = {k: min(1.0, max(0.0, v + jitter())) for k, v in vals.items()}
    out = {f"{split}/{task}/{k}": v for k, v in vals.items()}
    if intervals:
        for k, v in vals.items():
            half = 0.05 if k == "dd" else 1.96 * float(np.sqrt(max(v * (1 - v), 0.01) / N_CASES))
            out[f"{split}/{task}/{k}_ci_low"] = max(0.0, v - half)
            out[f"{split}/{task}/{k}_ci_high"] = v + half if k == "dd" else min(1.0, v + half)
            out[f"{split}/{task}/{k}_n"] = float(N_CASES)
    return out


def _tags(kind: str, mode: str, method: str, tasks, **extra) -> dict[str, str]:
    tags = {"kind": kind, "mode": mode, "method": method, "tasks": ",".join(tasks),
            "dataset_hash": "d41d8cd9", **extra}
    return {k: str(v) for k, v in tags.items()}


def _eval(experiment: str, name: str, mode: str, method: str, tasks, levels: dict[str, float], rng,
          setting: str = "seen", uri: str | None = None, intervals: bool = True, **extra) -> str:
    metrics = {}
    for task, level in levels.items():
        metrics.update(_task_metrics(task, level, rng, intervals=intervals))
    rel = [v for k, v in metrics.items() if k.endswith(("/reliability", "/es"))]
    metrics["test/avg/reliability"] = float(np.mean(rel))
    tags = _tags("eval", mode, method, tasks, instruction_setting=setting, model="tiny-llama", **extra)
    with tracking.run(experiment, name, tags=tags, params={"eval.split": "test", "data.tasks": ",".join(tasks)},
                      tracking_uri=uri) as rid:
        tracking.log_metrics(metrics)
    return rid


TRAIN_STEPS, VAL_EVERY, BEST_STEP = 30, 10, 20


def _train(experiment: str, name: str, mode: str, method: str, tasks, rng, setting: str,
           uri: str | None = None, kind: str = "train") -> str:
    """A training run: losses every 5 steps, val metrics every 10 (best at step 20), provenance tags."""
    params = {"train.batch_size": 8, "train.max_steps": TRAIN_STEPS, "editor.rank": 1920, "model": "tiny-llama",
              "train.seed": 0, "data.tasks": ",".join(tasks), "data.instruction_setting": setting, "mode": mode}
    tags = _tags(kind, mode, method, tasks, instruction_setting=setting, seed=0, model="tiny-llama",
                 model_source="random weights, seed 0 (configs/models/tiny-llama.yaml)", best_step=BEST_STEP,
                 train_edits=TRAIN_STEPS * 8, checkpoint_edits=BEST_STEP * 8, stopped="max_steps",
                 command=f"instructedit train --config {name}")
    with tracking.run(experiment, name, tags=tags, params=params, tracking_uri=uri) as rid:
        for step in range(0, TRAIN_STEPS + 1, 5):
            tracking.log_metrics({"loss/total": 3.0 / (step + 1), "loss/edit": 2.0 / (step + 1),
                                  "loss/loc": 0.1, "train/edit_success": step / 30, "lr/edit_mean": 1e-4},
                                 step=step)
        for step in range(VAL_EVERY, TRAIN_STEPS + 1, VAL_EVERY):
            level = 0.7 - 0.1 * abs(step - BEST_STEP) / VAL_EVERY  # peaks at the best step
            val = {}
            for t in tasks:
                val.update(_task_metrics(t, level, rng, split="val"))
            val["val/edit_success"] = level
            val["val/reliability"] = level
            val["val/locality"] = 0.9
            val["val/score"] = 0.5 * (level + 0.9)
            tracking.log_metrics(val, step=step)
    return rid


def build(experiment: str = "synthetic", uri: str | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Make every kind of run the report reads; returns run ids by group."""
    rng = np.random.default_rng(seed)
    everything = (*TRAIN, HOLD_OUT)
    ids: dict[str, list[str]] = {}
    ids["pre"] = [_eval(experiment, "pre-edit", "pre-edit", "Pre-edit", TRAIN,
                        {t: 0.05 for t in everything}, rng, setting="none", uri=uri)]
    # FT-L logs means only, as runs from before the intervals do: its bars have no error bars.
    ids["ftl"] = [_eval(experiment, "ft-l", "ft-l", "FT-L", TRAIN,
                        {t: 0.4 for t in everything}, rng, setting="none", uri=uri, intervals=False)]
    ids["single"] = []
    ids["train"] = []
    for t in TRAIN:
        ids["train"].append(_train(experiment, f"mend-{t}", "single-task", "MEND (single-task)", [t], rng, "none",
                                   uri=uri))
        levels = {u: (0.8 if u == t else 0.15) for u in everything}
        ids["single"].append(_eval(experiment, f"mend-{t}-eval", "single-task", "MEND (single-task)", [t],
                                   levels, rng, setting="none", uri=uri, editor_run=ids["train"][-1]))
    ids["train"].append(_train(experiment, "mend-multi", "multi-task", "MEND (multi-task)", TRAIN, rng, "none",
                               uri=uri))
    ids["multi"] = [_eval(experiment, "mend-multi-eval", "multi-task", "MEND (multi-task)", TRAIN,
                          {t: 0.6 for t in everything}, rng, setting="none", uri=uri, editor_run=ids["train"][-1])]
    ids["train"].append(_train(experiment, "instructedit", "instructedit", "InstructEdit", TRAIN, rng, "seen",
                               uri=uri))
    ids["instructedit"] = [
        _eval(experiment, "instructedit-seen", "instructedit", "InstructEdit", TRAIN,
              {**{t: 0.85 for t in TRAIN}, HOLD_OUT: 0.75}, rng, setting="seen", uri=uri,
              editor_run=ids["train"][-1]),
        _eval(experiment, "instructedit-unseen", "instructedit", "InstructEdit", TRAIN,
              {**{t: 0.8 for t in TRAIN}, HOLD_OUT: 0.7}, rng, setting="unseen", uri=uri,
              editor_run=ids["train"][-1]),
    ]
    # Task scaling study: Recent -> +CounterFact -> +ConvSent, ZsRE held out.
    ids["scaling"] = []
    with tracking.run(experiment, "task-scaling", tags=_tags("study", "instructedit", "InstructEdit", TRAIN,
                                                             study="task_scaling"), tracking_uri=uri) as parent:
        pass
    for i, zsre in enumerate((0.06, 0.45, 0.82)):
        tasks = ("recent", "counterfact", "convsent")[: i + 1]
        levels = {t: 0.8 for t in tasks} | {HOLD_OUT: zsre}
        metrics = {}
        for t, lv in levels.items():
            metrics.update(_task_metrics(t, lv, rng))
        tags = _tags("trial", "instructedit", "InstructEdit", tasks, study="task_scaling",
                     instruction_setting="seen")
        with tracking.run(experiment, f"scaling-{i + 1}", tags=tags, parent_run_id=parent,
                          params={"data.tasks": ",".join(tasks), "train.max_steps": 30}, tracking_uri=uri) as rid:
            tracking.log_metrics(metrics)
        ids["scaling"].append(rid)
    # ConvSent balancing study.
    ids["balance"] = []
    for balance, es in (("balanced", 0.8), ("full", 0.9)):
        levels = {"counterfact": 0.85 if balance == "balanced" else 0.6, "recent": 0.8, "convsent": es}
        metrics = {}
        for t, lv in levels.items():
            metrics.update(_task_metrics(t, lv, rng))
        tags = _tags("trial", "instructedit", "InstructEdit", TRAIN, study="convsent_balance",
                     instruction_setting="seen", balance=balance)
        with tracking.run(experiment, f"balance-{balance}", tags=tags, tracking_uri=uri,
                          params={"tasks.convsent.balance_to": 1427 if balance == "balanced" else None}) as rid:
            tracking.log_metrics(metrics)
        ids["balance"].append(rid)
    return ids


def gradient_clusters(n_per_task: int = 30, dim: int = 64, seed: int = 0,
                      tasks=("counterfact", "recent", "convsent", "zsre"), spread: float = 4.0):
    """Gaussian clusters, one per task, around orthogonal-ish centres: PCA should separate them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(tasks), dim))
    centres = spread * centres / np.linalg.norm(centres, axis=1, keepdims=True) * np.sqrt(dim) / 4
    xs, labels = [], []
    for c, t in zip(centres, tasks):
        xs.append(c + rng.normal(scale=1.0, size=(n_per_task, dim)))
        labels += [t] * n_per_task
    return np.concatenate(xs).astype(np.float32), labels


def edit_records(n_per_task: int = 8, tasks=("counterfact", "recent", "convsent", "zsre"), split: str = "test"):
    """Small, well-formed EditRecords (instruction template applied) for the gradient analysis."""
    from instructedit.data.record import EditRecord, Probe, Sentiment

    template = "Task: {task}\nDescription: {instruction}\nInput: {prompt}"
    out = []
    for task in tasks:
        for i in range(n_per_task):
            instruction = f"Update the model's knowledge for the {task} fact below."
            if task == "convsent":
                prompt = f"What do you think of topic {i}?"
                rec = EditRecord(
                    task=task, case_id=f"{task}-{i}", prompt=prompt, target_new="I love it.", split=split,
                    subject=f"topic {i}", sentiment=Sentiment(topic=f"topic {i}", label="positive",
                                                              good=[f"topic {i} is great."],
                                                              bad=[f"topic {i} is awful."]),
                    locality=[Probe("neighborhood", "What do you think of the weather?", ["It is fine."])],
                )
            else:
                prompt = f"The capital of country {i} is"
                rec = EditRecord(
                    task=task, case_id=f"{task}-{i}", prompt=prompt, target_new=f" City{i}", split=split,
                    subject=f"country {i}", ground_truth=[f" Old{i}"],
                    rephrase_prompts=[f"Country {i} has its capital in"],
                    locality=[Probe("neighborhood", "The capital of France is", [" Paris"])],
                    portability=[Probe("reasoning", f"The mayor of country {i}'s capital lives in", [f" City{i}"])],
                )
            rec.instruction_id = f"{task}-0"
            rec.instruction = instruction
            rec.edit_input = template.format(task=task, instruction=instruction, prompt=prompt)
            out.append(rec)
    return out

"""Scorers: how good is an instruction for a task? `Scorer = Callable[[task, instruction], float]`.

- `TrialEditorScorer`: the real one. A short editor training on a subset of the task with the
  candidate as the only instruction, then validation; the score is `val/edit_success`.
- `LengthScorer`: cheap and deterministic (closeness to a target length), to dry-run the loop.

`score_all` runs a scorer over candidates as Ray tasks in parallel (or in-process). A scorer's
`cache_key()` names it in the score cache; two scorers with the same key must score alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import RunConfig, from_dict, to_dict

Scorer = Callable[[str, str], float]


def scorer_id(scorer: Scorer) -> str:
    """A stable name for the scorer and its settings (part of the score cache key)."""
    if hasattr(scorer, "cache_key"):
        return str(scorer.cache_key())
    if dataclasses.is_dataclass(scorer):
        blob = json.dumps(to_dict(scorer), sort_keys=True, default=str)
        return f"{type(scorer).__qualname__}:{blob}"
    return f"{getattr(scorer, '__module__', '?')}.{getattr(scorer, '__qualname__', type(scorer).__qualname__)}"


# ----------------------------------------------------------------------------------- cheap
@dataclass(frozen=True)
class LengthScorer:
    """1 at `target_words` words, falling linearly to 0 at 0 or 2x the target. Deterministic."""

    target_words: int = 20

    def __call__(self, task: str, instruction: str) -> float:
        words = len(instruction.split())
        return round(max(0.0, 1.0 - abs(words - self.target_words) / self.target_words), 6)


# ---------------------------------------------------------------------------------- trial
TRIAL_INSTRUCTION_ID = "candidate"


@dataclass(frozen=True)
class TrialEditorScorer:
    """A trial editor: train briefly on `task` with the candidate instruction, return a val metric.

    The candidate becomes the only instruction of the task through a throw-away instruction set
    (selected with `data.instruction_set`), so the data pipeline tags every record with it.
    `base` is the run config to start from (model, editor); the trial settings override it.
    """

    base: RunConfig = field(default_factory=RunConfig)
    model: str = ""  # "" = base.model
    max_steps: int = 30
    train_records: int = 32  # per task
    val_records: int = 16
    batch_size: int = 4
    metric: str = "val/edit_success"
    seed: int = 0
    use_gpu: str = "false"  # false | true | auto
    verbose: bool = False  # the trial's own training log (stderr)

    def trial_config(self, task: str, set_name: str) -> RunConfig:
        d = to_dict(self.base)
        d["name"] = f"trial-{task}"
        d["mode"] = "instructedit"
        d["model"] = self.model or self.base.model
        d["data"].update(tasks=[task], hold_out=[], instruction_set=set_name, instruction_setting="seen",
                         max_records=self.train_records, seed=self.seed)
        d["train"].update(max_steps=self.max_steps, val_every=self.max_steps, val_size=self.val_records,
                          batch_size=self.batch_size, num_workers=1, seed=self.seed, use_gpu=self.use_gpu,
                          early_stop_patience=10**6, time_budget_s=None)
        return from_dict(RunConfig, d, "trial").validate()

    def cache_key(self) -> str:
        d = to_dict(self)
        d.pop("verbose")
        d["base"] = to_dict(self.base)
        blob = json.dumps(d, sort_keys=True, default=str)
        return f"TrialEditorScorer:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def _device(self) -> str:
        import torch

        if self.use_gpu == "true" or (self.use_gpu == "auto" and torch.cuda.is_available()):
            return "cuda"
        return "cpu"

    def __call__(self, task: str, instruction: str) -> float:
        # Imported here: the trainer is heavy, and a Ray worker imports it only when it trains.
        from ..data.instruction_sets import save_set
        from ..data.pipeline import load_records
        from ..train.loop import train_editor

        with tempfile.TemporaryDirectory(prefix="instructedit-trial-") as tmp:
            previous = os.environ.get("INSTRUCTEDIT_INSTRUCTION_SETS")
            os.environ["INSTRUCTEDIT_INSTRUCTION_SETS"] = os.path.join(tmp, "sets")
            try:
                set_name = "trial"
                save_set(set_name, {task: [{"id": TRIAL_INSTRUCTION_ID, "text": instruction}]},
                         version=0, source={"kind": "trial"})
                cfg = self.trial_config(task, set_name)
                train = load_records(cfg, "train", [task])
                val = load_records(cfg, "val", [task])
                if self.val_records:
                    val = val[: self.val_records]
                # No checkpoints: a trial only reports its score.
                result = train_editor(cfg, train, val, out_dir=None, verbose=self.verbose, device=self._device())
            finally:
                if previous is None:
                    os.environ.pop("INSTRUCTEDIT_INSTRUCTION_SETS", None)
                else:
                    os.environ["INSTRUCTEDIT_INSTRUCTION_SETS"] = previous
        metrics = result.best_metrics
        if self.metric not in metrics:
            raise KeyError(f"trial editor reported no {self.metric!r}; it reported {sorted(metrics)}")
        return float(metrics[self.metric])


# -------------------------------------------------------------------------------- running
@dataclass
class ScoreOutcome:
    score: float | None
    error: str = ""


def _score_one(scorer: Scorer, task: str, text: str) -> ScoreOutcome:
    try:
        value = float(scorer(task, text))
    except Exception as e:  # noqa: BLE001 - one failed trial must not sink the others
        return ScoreOutcome(None, f"{type(e).__name__}: {e}"[:500])
    if not math.isfinite(value):
        return ScoreOutcome(None, f"non-finite score {value}")
    return ScoreOutcome(value)


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Start a local Ray unless one is running; True when this call started it (then shut it down)."""
    from ..ray_session import init_ray

    return init_ray(num_cpus=num_cpus, log_to_driver=False)


def score_all(scorer: Scorer, task: str, texts: list[str], *, executor: str = "ray",
              num_cpus: float = 1, num_gpus: float = 0) -> list[ScoreOutcome]:
    """Score `texts` in order; with executor="ray", one Ray task per candidate, all in parallel."""
    if executor == "local" or not texts:
        return [_score_one(scorer, task, t) for t in texts]
    if executor != "ray":
        raise ValueError(f"executor must be ray|local, got {executor!r}")
    import ray

    ensure_ray()
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_score_one)
    scorer_ref = ray.put(scorer)
    refs = [remote.remote(scorer_ref, task, t) for t in texts]
    return list(ray.get(refs))

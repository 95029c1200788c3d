"""The instruction optimiser: write candidates with an LLM, score them, feed scores back, repeat.

    round 1    task description -> N candidates -> clean, dedupe, bound, check slots -> score
    round r>1  the best-so-far with their scores ("the instruction's performance is ...") -> N more
    stop       after `patience` rounds without a better best, or after `rounds` rounds

Scores come from a pluggable `Scorer` run as parallel Ray tasks. Completions and scores go
through an on-disk cache (cache.py), so a rerun with the same seed replays them: no new LLM calls,
no new trials, the same result. Everything is recorded in one MLflow run (tag kind=optimize) and
the best instructions are saved as a versioned instruction set (sets.py) that training,
evaluation and studies select with `data.instruction_set`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import TaskConfig, load_task
from ..editor import methods
from . import prompts
from .cache import CachedWriter, JsonCache
from .candidates import clean, dedupe_key, required_slots
from .scoring import ScoreOutcome, Scorer, score_all, scorer_id
from .writer import Writer

log = logging.getLogger(__name__)


class OptimizeError(RuntimeError):
    pass


@dataclass(frozen=True)
class OptimizeConfig:
    rounds: int = 5  # round budget
    candidates: int = 4  # new candidates asked for per round
    patience: int = 2  # stop after this many rounds without a better best score
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    seed: int = 0
    keep: int = 0  # instructions saved in the set (0 = as many as the task YAML's seen pool)
    max_chars: int = 300
    max_words: int = 40  # asked of the LLM (max_chars is what is enforced)
    min_words: int = 4
    slot_policy: str = "repair"  # repair | reject candidates that lack the task's slots
    feedback_k: int = 8  # best-so-far instructions shown to the LLM in a feedback round
    fill_attempts: int = 2  # extra generate calls per round when cleaning left fewer than N
    executor: str = "ray"  # ray | local (in-process, for debugging)
    trial_cpus: float = 1
    trial_gpus: float = 0
    set_name: str = "optimized"  # "" = do not save a set
    experiment: str = "instructedit"
    tracking_uri: str = ""
    cache_dir: str = ""  # "" = $INSTRUCTEDIT_CACHE/instruction_writer

    def validate(self) -> OptimizeConfig:
        if self.rounds < 1 or self.candidates < 1 or self.patience < 1:
            raise ValueError("rounds, candidates and patience must be >= 1")
        if self.slot_policy not in ("repair", "reject"):
            raise ValueError(f"slot_policy must be repair|reject, got {self.slot_policy!r}")
        if self.executor not in ("ray", "local"):
            raise ValueError(f"executor must be ray|local, got {self.executor!r}")
        return self


@dataclass
class Candidate:
    round: int
    index: int  # order within its round
    text: str
    status: str  # ok | repaired | truncated | duplicate | rejected:<why> | failed
    score: float | None = None
    raw: str = ""
    score_cached: bool = False
    error: str = ""

    @property
    def scored(self) -> bool:
        return self.score is not None


@dataclass
class RoundSummary:
    round: int
    generated: int  # completions received
    new: int  # accepted, not seen before
    best_in_round: float | None
    best_so_far: float | None
    improved: bool
    seconds: float


@dataclass
class OptimizeResult:
    task: str
    best: list[Candidate]  # the saved instructions, best first
    rounds: list[RoundSummary]
    history: list[Candidate]  # every candidate, in order
    stopped: str  # "patience" | "budget"
    llm_calls: int  # real (uncached) writer calls
    llm_cache_hits: int
    trials: int  # real (uncached) scorer calls
    score_cache_hits: int
    run_id: str = ""
    set_path: str = ""
    set_version: int = 0

    @property
    def best_score(self) -> float | None:
        return self.best[0].score if self.best else None


def _resolve_task(task: str | TaskConfig) -> TaskConfig:
    return load_task(task) if isinstance(task, str) else task


def optimize(
    task: str | TaskConfig,
    writer: Writer,
    scorer: Scorer,
    cfg: OptimizeConfig = OptimizeConfig(),
    *,
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Optimise the instructions of one task; see the module docstring."""
    from .. import tracking

    cfg = cfg.validate()
    task_cfg = _resolve_task(task)
    say = progress or (lambda msg: log.info("%s", msg))
    cache = JsonCache(cfg.cache_dir or None)
    cached_writer = CachedWriter(writer, cache)
    sid = scorer_id(scorer)
    slots = required_slots(task_cfg)
    keep = cfg.keep or len(task_cfg.seen_pool) or cfg.candidates

    params = {
        "task": task_cfg.name, **{f"writer.{k}": v for k, v in writer.describe().items()},
        **{f"optimize.{k}": v for k, v in asdict(cfg).items() if k not in ("tracking_uri", "cache_dir")},
        "scorer": sid[:500], "slots": ",".join(slots),
    }
    tags = {"kind": "optimize", **methods.get("instructedit").tags(), "tasks": task_cfg.name,
            "writer_backend": writer.backend, "writer_model": writer.model}
    history: list[Candidate] = []
    summaries: list[RoundSummary] = []
    transcript: list[dict[str, Any]] = []
    seen: dict[str, Candidate] = {}  # dedupe key -> first candidate with that text
    # The task's unseen instructions stay unseen: a candidate equal to one is a duplicate.
    unseen_keys = {dedupe_key(i.text) for i in task_cfg.unseen_pool}
    best: Candidate | None = None
    stale = 0
    stopped = "budget"
    trials = score_hits = 0
    owned_ray = False

    with tracking.run(cfg.experiment, f"optimize-{task_cfg.name}", params=params, tags=tags,
                      tracking_uri=cfg.tracking_uri or None) as run_id:
        try:
            if cfg.executor == "ray":
                from .scoring import ensure_ray

                owned_ray = ensure_ray()
            say(f"[optimize] task {task_cfg.name}: up to {cfg.rounds} rounds x {cfg.candidates} candidates, "
                f"patience {cfg.patience}, writer {writer.backend}:{writer.model}, scorer {sid[:60]}")
            for rnd in range(1, cfg.rounds + 1):
                t0 = time.time()
                if best is None:
                    messages = prompts.first_round(task_cfg.description, slots, cfg.max_words)
                else:
                    shown = sorted((c for c in seen.values() if c.scored), key=_rank)[: cfg.feedback_k]
                    messages = prompts.feedback_round(task_cfg.description, slots, cfg.max_words,
                                                      [(c.text, c.score) for c in reversed(shown)])
                new: list[Candidate] = []
                generated = 0
                for attempt in range(1 + cfg.fill_attempts):
                    want = cfg.candidates - len(new)
                    if want <= 0:
                        break
                    seed = cfg.seed * 100_003 + rnd * 101 + attempt
                    responses = cached_writer.generate(messages, n=want if attempt else cfg.candidates,
                                                       seed=seed)
                    transcript.append({"round": rnd, "attempt": attempt, "seed": seed, "messages": messages,
                                       "responses": responses})
                    for raw in responses:
                        generated += 1
                        c = clean(raw, slots, max_chars=cfg.max_chars, min_words=cfg.min_words,
                                  slot_policy=cfg.slot_policy)
                        cand = Candidate(rnd, len(history), c.text, c.status, raw=raw)
                        history.append(cand)
                        if not c.accepted:
                            continue
                        key = dedupe_key(c.text)
                        if key in seen or key in unseen_keys or len(new) >= cfg.candidates:
                            cand.status = "duplicate" if key in seen or key in unseen_keys else "surplus"
                            continue
                        seen[key] = cand
                        new.append(cand)
                # Scores: cached ones first, the rest as parallel trials.
                todo = []
                for cand in new:
                    hit = cache.get(_score_key(sid, task_cfg.name, cand.text))
                    if hit is not None:
                        cand.score, cand.score_cached = float(hit), True
                        score_hits += 1
                    else:
                        todo.append(cand)
                if todo:
                    say(f"[optimize] round {rnd}: scoring {len(todo)} candidate(s)"
                        + (f" ({len(new) - len(todo)} cached)" if len(new) > len(todo) else ""))
                outcomes: list[ScoreOutcome] = score_all(
                    scorer, task_cfg.name, [c.text for c in todo], executor=cfg.executor,
                    num_cpus=cfg.trial_cpus, num_gpus=cfg.trial_gpus,
                )
                trials += len(todo)
                for cand, out in zip(todo, outcomes):
                    if out.score is None:
                        cand.status, cand.error = "failed", tracking.redact_text(out.error)
                        say(f"[optimize]   trial failed: {cand.error[:200]}")
                        continue
                    cand.score = out.score
                    cache.put(_score_key(sid, task_cfg.name, cand.text), out.score)
                if todo and all(c.status == "failed" for c in todo) and best is None:
                    raise OptimizeError(f"every trial of round {rnd} failed; first error: {todo[0].error}")

                scored = [c for c in new if c.scored]
                round_best = max(scored, key=lambda c: c.score, default=None)
                improved = round_best is not None and (
                    best is None or round_best.score > best.score + cfg.min_delta)
                if improved:
                    best, stale = round_best, 0
                else:
                    stale += 1
                summary = RoundSummary(rnd, generated, len(new), round_best.score if round_best else None,
                                       best.score if best else None, improved, round(time.time() - t0, 3))
                summaries.append(summary)
                tracking.log_metrics(_round_metrics(summary, scored), step=rnd)
                say(_round_line(summary, cfg, stale, scored))
                if best is not None and stale >= cfg.patience:
                    stopped = "patience"
                    break
            if best is None:
                raise OptimizeError(f"no candidate for task {task_cfg.name} could be scored")
            ranked = sorted((c for c in seen.values() if c.scored), key=_rank)
            chosen = ranked[:keep]
            result = OptimizeResult(
                task=task_cfg.name, best=chosen, rounds=summaries, history=history, stopped=stopped,
                llm_calls=cached_writer.calls, llm_cache_hits=cached_writer.hits, trials=trials,
                score_cache_hits=score_hits, run_id=run_id,
            )
            if cfg.set_name:
                path, version = save_optimized_set(cfg.set_name, task_cfg, chosen, meta={
                    "mlflow_run_id": run_id, "writer": writer.describe(), "scorer": sid[:500],
                    "seed": cfg.seed})
                result.set_path, result.set_version = str(path), version
                tracking.log_text(Path(path).read_text(), f"optimize/set/{Path(path).name}")
                say(f"[optimize] saved instruction set {cfg.set_name!r} v{version} -> {path} "
                    f"(select it with data.instruction_set={cfg.set_name})")
            tracking.log_metrics({"optimize/best_score": best.score, "optimize/rounds": len(summaries),
                                  "optimize/llm_calls": cached_writer.calls, "optimize/trials": trials})
            tracking.set_tags({"stopped": stopped, "instruction_set": cfg.set_name,
                               "instruction_set_version": str(result.set_version)})
            say(f"[optimize] stopped ({stopped}) after {len(summaries)} round(s); best {best.score:.4f}: "
                f"{best.text}")
            say(f"[optimize] new LLM calls {cached_writer.calls} (cached {cached_writer.hits}), "
                f"trials {trials} (cached scores {score_hits}); MLflow run {run_id}")
            return result
        finally:
            _log_tables(tracking, history, summaries, transcript)
            if owned_ray:
                import ray

                ray.shutdown()


def _rank(c: Candidate) -> tuple[float, int]:
    """Best first; ties keep the order candidates were written in (deterministic)."""
    return (-(c.score if c.score is not None else -math.inf), c.index)


def _score_key(sid: str, task: str, text: str) -> dict[str, Any]:
    return {"kind": "score", "scorer": sid, "task": task, "instruction": text}


def _round_metrics(s: RoundSummary, scored: list[Candidate]) -> dict[str, float]:
    m = {"optimize/generated": s.generated, "optimize/new_candidates": s.new}
    if s.best_in_round is not None:
        m["optimize/round_best"] = s.best_in_round
        m["optimize/round_mean"] = sum(c.score for c in scored) / len(scored)
    if s.best_so_far is not None:
        m["optimize/best_so_far"] = s.best_so_far
    return m


def _round_line(s: RoundSummary, cfg: OptimizeConfig, stale: int, scored: list[Candidate]) -> str:
    rb = f"{s.best_in_round:.4f}" if s.best_in_round is not None else "-"
    bs = f"{s.best_so_far:.4f}" if s.best_so_far is not None else "-"
    note = "improved" if s.improved else f"no improvement {stale}/{cfg.patience}"
    lines = [(f"[optimize] round {s.round}/{cfg.rounds}: {s.new} new of {s.generated} written, "
             f"round best {rb}, best so far {bs} ({note}) [{s.seconds:.1f}s]")]
    for c in sorted(scored, key=_rank):
        lines.append(f"[optimize]   {c.score:.4f}  {c.text}")
    return "\n".join(lines)


def _log_tables(tracking, history: list[Candidate], summaries: list[RoundSummary],
                transcript: list[dict[str, Any]]) -> None:
    """The round/candidate/score table, the round summaries and every prompt and response."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "candidate", "score", "status", "score_cached", "text", "raw", "error"])
    for c in history:
        w.writerow([c.round, c.index, "" if c.score is None else c.score, c.status, c.score_cached, c.text,
                    c.raw, c.error])
    tracking.log_text(buf.getvalue(), "optimize/candidates.csv")
    tracking.log_text(json.dumps([asdict(s) for s in summaries], indent=1), "optimize/rounds.json")
    tracking.log_text("\n".join(json.dumps(t, ensure_ascii=False) for t in transcript) + "\n",
                      "optimize/transcript.jsonl")


def save_optimized_set(name: str, task: TaskConfig, chosen: list[Candidate],
                       meta: dict[str, Any] | None = None) -> tuple[Path, int]:
    """Write `name` (the latest) and `name.v<version>` (frozen). Other tasks in the set are kept;
    the task's YAML unseen instructions are carried over, still marked unseen."""
    from ..config import ConfigError
    from ..data.instruction_sets import load_set, save_set

    try:
        previous = load_set(name)
    except ConfigError:
        previous = {"tasks": {}}
    version = int(previous.get("version", 0) or 0) + 1
    # Ids come from the text: the same instruction keeps its id across versions and reruns.
    entries = [{"id": f"opt-{hashlib.sha256(c.text.encode()).hexdigest()[:8]}", "text": c.text, "unseen": False,
                "score": c.score} for c in chosen]
    entries += [{"id": i.id, "text": i.text, "unseen": True} for i in task.unseen_pool]
    tasks = {t: v for t, v in previous.get("tasks", {}).items() if t != task.name}
    tasks[task.name] = entries
    sources = dict(previous.get("sources") or {})
    sources[task.name] = {"kind": "optimize", "version": version, **(meta or {})}
    info = {"version": version, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": "instructedit optimize-instructions", "sources": sources}
    save_set(f"{name}.v{version}", tasks, **info)
    return save_set(name, tasks, **info), version


__all__ = ["Candidate", "OptimizeConfig", "OptimizeError", "OptimizeResult", "RoundSummary", "optimize",
           "save_optimized_set"]

"""The editor training loop, top to bottom. Plain torch: it runs as-is in one process, and the Ray
Train worker (trainer.py) runs the same function with a process group and report hooks.

Per step: sample this worker's share of the global batch -> training_step -> backward -> (DDP
averages the hypernetwork's gradients) -> clip -> scheduled lr (schedule.py) -> Adam. Every
`val_every` steps: batched validation on the val split (never training data), best checkpoint, and
early stopping: after `early_stop_patience` validations in a row without a new best, training
stops and the result (and best.json) names the best validation step.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..config import RunConfig, run_model_config, to_dict
from ..editor.mend import LEGACY_EDITOR_FIELDS, MendEditor
from ..evaluate.core import EvalOptions, evaluate_batch, mend_edits
from ..evaluate.metrics import task_means
from ..models import LoadedModel, build_model
from .checkpoint import EDITOR_FILE, save_step, step_dir_name, write_best
from .schedule import lr_factor
from .step import StepBatch, make_step_batch, training_step


@dataclass
class TrainResult:
    best_metrics: dict[str, float]
    best_step: int
    steps: int
    checkpoint: Path | None
    stopped: str  # max_steps | early_stop | time_budget
    history: list[dict] = field(default_factory=list)


@dataclass
class LoopHooks:
    """Where the loop hands results out (Ray Train reports, MLflow); all optional."""

    on_log: Callable[[int, dict], None] | None = None
    on_validate: Callable[[int, dict, Path | None, bool], None] | None = None
    fault: Callable[[int], None] | None = None  # test-only: called each step (e.g. to crash a worker)
    on_batch: Callable[[int, list], None] | None = None  # this worker's records of each step (tests, benchmarks)


class StepModule(nn.Module):
    """The editor behind a forward() so DistributedDataParallel can wrap the hypernetwork only."""

    def __init__(self, editor: MendEditor, run_cfg: RunConfig):
        super().__init__()
        self.editor = editor
        self.cfg = run_cfg.editor

    def forward(self, batch: StepBatch):
        return training_step(self.editor, batch, self.cfg)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def validate(editor: MendEditor, records, batch_size: int, max_length: int) -> tuple[dict[str, float], list[dict]]:
    """Val metrics per task and averaged; with several workers each validates its slice."""
    rank, world = _world()
    mine = records[rank::world]
    was_training = editor.training
    editor.eval()
    rows: list[dict] = []
    make = mend_edits(editor)
    # Selection reads the headline (plain-probe) metrics; the edit input is the record's own
    # (instructed when the run tags records). Instructed probes and generation are left to the
    # final evaluation: validation runs every val_every steps and must stay cheap.
    options = EvalOptions(instructed_edit=True, instructed_probes=False, generation=False)
    for i in range(0, len(mine), batch_size):
        rows += evaluate_batch(editor, mine[i : i + batch_size], make, max_length, options)
    editor.train(was_training)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    return summarize(rows, "val"), rows


def summarize(rows: list[dict], prefix: str) -> dict[str, float]:
    """Per-case rows -> {prefix/task/metric, prefix/metric (mean over tasks), prefix/edit_success}."""
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    for task, means in task_means(rows).items():
        for k, v in means.items():
            out[f"{prefix}/{task}/{k}"] = v
            per_metric.setdefault(k, []).append(v)
    for k, vals in per_metric.items():
        out[f"{prefix}/{k}"] = sum(vals) / len(vals)  # macro average over tasks
    if f"{prefix}/edit_success" in out:
        # One number to select checkpoints by: an editor must both edit and leave the rest alone.
        loc = out.get(f"{prefix}/locality")
        out[f"{prefix}/score"] = out[f"{prefix}/edit_success"] if loc is None else \
            0.5 * (out[f"{prefix}/edit_success"] + loc)
    return out


# The headline metrics of a validation line, plain probes first, then their instructed variants;
# the rest (per task, generation-based, portability kinds) is in MLflow.
VAL_LINE_METRICS = ("reliability", "generalization", "locality", "portability", "es", "dd")


def val_line(step: int, val: dict[str, float], selection: str, improved: bool) -> str:
    """`[val] step N val/score=... reliability=... ... | instructed: reliability=...` on one line."""
    plain = [f"{m}={val[f'val/{m}']:.3f}" for m in VAL_LINE_METRICS if f"val/{m}" in val]
    instructed = [f"{m}={val[f'val/{m}_instructed']:.3f}" for m in VAL_LINE_METRICS
                  if f"val/{m}_instructed" in val]
    head = f"{selection}={val[selection]:.3f}" if selection in val else ""
    return (f"[val] step {step} {head} " + " ".join(plain)
            + (" | instructed: " + " ".join(instructed) if instructed else "")
            + (" *best*" if improved else "")).replace("  ", " ")


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def build_editor(cfg: RunConfig, loaded: LoadedModel | None = None, device: str = "cpu") -> MendEditor:
    loaded = loaded or build_model(run_model_config(cfg), device=device)
    torch.manual_seed(cfg.train.seed)
    return MendEditor(loaded, cfg.editor).to(device)


def make_optimizer(editor: MendEditor, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam with two groups, in this order: the transforms (editor.lr), the edit lrs (lr_lr)."""
    lr_params = [editor.edit_lrs]
    net_params = [p for n, p in editor.named_parameters() if n != "edit_lrs"]
    return torch.optim.Adam([{"params": net_params, "lr": cfg.editor.lr},
                             {"params": lr_params, "lr": cfg.editor.lr_lr}])


def set_lr(optimizer: torch.optim.Optimizer, cfg: RunConfig, step: int) -> float:
    """Both groups' lr for the update after `step` completed steps; returns the factor."""
    f = lr_factor(step, cfg.train)
    for group, base in zip(optimizer.param_groups, (cfg.editor.lr, cfg.editor.lr_lr)):
        group["lr"] = base * f
    return f


def resume_config(cfg: RunConfig, resume: dict | None) -> RunConfig:
    """A training state written before the editor fields of LEGACY_EDITOR_FIELDS existed (no
    "editor_fields" entry) resumes with their legacy values: the statistics and edit lrs it
    carries were learnt with them, and its checkpoints must keep editing the same way."""
    if not resume or "editor_fields" in resume:
        return cfg
    return dataclasses.replace(cfg, editor=dataclasses.replace(cfg.editor, **LEGACY_EDITOR_FIELDS))


def train_editor(
    cfg: RunConfig,
    train_records: list,
    val_records: list,
    out_dir: str | Path | None = None,
    *,
    loaded: LoadedModel | None = None,
    editor: MendEditor | None = None,
    resume: dict | None = None,
    hooks: LoopHooks | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> TrainResult:
    hooks = hooks or LoopHooks()
    tc = cfg.train
    rank, world = _world()
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose and rank == 0 else (lambda *a: None)
    out = Path(out_dir) if out_dir else None
    if not train_records:
        raise ValueError("no training records: check data.tasks and the prepared data")
    if not val_records:
        raise ValueError("no validation records: training never validates on training data")

    if editor is None:
        legacy = resume_config(cfg, resume)
        if legacy is not cfg:
            say("[train] resuming a state written before editor.norm_eps/norm_eps_on/token_select/loc_positions "
                f"existed: continuing with their legacy values {LEGACY_EDITOR_FIELDS}")
        cfg = legacy
        editor = build_editor(cfg, loaded, str(device))
    if tc.hidden_cache_mb > 0:
        editor.split.enable_cache(tc.hidden_cache_mb)
    editor.train()
    step_module: nn.Module = StepModule(editor, cfg)
    if world > 1:
        # The base model is frozen and outside the editor's module tree: DDP sees only the
        # hypernetwork. Running stats are synchronised inside RunningNorm.update.
        step_module = nn.parallel.DistributedDataParallel(step_module, broadcast_buffers=False)
    optimizer = make_optimizer(editor, cfg)

    step, best, best_step, bad_vals = 0, -math.inf, 0, 0
    best_metrics: dict[str, float] = {}
    history: list[dict] = []
    if resume:
        editor.load_state_dict(resume["editor"])
        optimizer.load_state_dict(resume["optimizer"])
        step, best, best_step, bad_vals = resume["step"], resume["best"], resume["best_step"], resume["bad_vals"]
        best_metrics = resume.get("best_metrics", {})
        say(f"[train] resumed at step {step} (best {best:.4f} at step {best_step})")

    local_bs = tc.batch_size // world
    # Every worker draws the same global permutation and takes its own slice of each global batch.
    order_rng = random.Random(tc.seed)
    perm: list[int] = []  # grown lazily; a resumed run regenerates the same order up to its step
    # The val subset follows data.seed, not train.seed: runs of one seed group select on the same records.
    val_set = _val_subset(val_records, tc.val_size, cfg.data.seed)

    def batch_for(s: int) -> list:
        nonlocal perm
        need = (s + 1) * tc.batch_size
        while len(perm) < need:
            epoch = list(range(len(train_records)))
            order_rng.shuffle(epoch)
            perm += epoch
        idx = perm[s * tc.batch_size : (s + 1) * tc.batch_size]
        return [train_records[i] for i in idx[rank * local_bs : (rank + 1) * local_bs]]

    t0 = time.time()
    steps_this_run = 0
    stopped = "max_steps"
    say(f"[train] {len(train_records)} train / {len(val_set)} val records, batch {tc.batch_size} "
        f"({world} worker(s) x {local_bs}), up to {tc.max_steps} steps")
    while step < tc.max_steps:
        if hooks.fault:
            hooks.fault(step)
        records = batch_for(step)
        if hooks.on_batch:
            hooks.on_batch(step, records)
        batch = make_step_batch(records, editor.tokenizer, tc.max_length, seed=tc.seed * 100003 + step,
                                n_sentences=tc.sentiment_sentences,
                                outer=cfg.editor.rephrase_in_edit_loss,
                                instruction_dropout=tc.instruction_dropout).to(device)
        # bf16 autocast on GPU (trainer.py); the hypernetwork's parameters and Adam stay fp32.
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss, metrics = step_module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(editor.parameters(), cfg.editor.grad_clip)
        factor = set_lr(optimizer, cfg, step)
        optimizer.step()
        step += 1
        steps_this_run += 1
        metrics["train/grad_norm"] = float(grad_norm)
        metrics["lr/hypernet"] = cfg.editor.lr * factor
        metrics["lr/lr_lr"] = cfg.editor.lr_lr * factor
        if world > 1:
            t = torch.tensor([metrics[k] for k in sorted(metrics)], dtype=torch.float64)
            dist.all_reduce(t)
            metrics = {k: float(v) / world for k, v in zip(sorted(metrics), t.tolist())}

        elapsed = time.time() - t0
        if step % tc.log_every == 0 or step == 1:
            rate = elapsed / steps_this_run
            eta = rate * (tc.max_steps - step)
            if tc.time_budget_s:
                eta = min(eta, tc.time_budget_s - elapsed)
            say(f"[train] step {step}/{tc.max_steps} loss {metrics['loss/total']:.4f} "
                f"edit {metrics['loss/edit']:.4f} loc {metrics['loss/loc']:.4f} "
                f"success {metrics['train/edit_success']:.2f} ({rate:.2f}s/step, ETA {_fmt_eta(eta)})")
            if hooks.on_log:
                hooks.on_log(step, metrics)

        out_of_time = _agree(bool(tc.time_budget_s and elapsed >= tc.time_budget_s))
        if step % tc.val_every == 0 or step == tc.max_steps or out_of_time:
            val, _rows = validate(editor, val_set, cfg.eval.batch_size, tc.max_length)
            if tc.early_stop_metric not in val:  # a typo must not fall back to another metric silently
                raise ValueError(f"train.early_stop_metric {tc.early_stop_metric!r} is not a validation "
                                 f"metric of this run; it has {sorted(val)}")
            score = val[tc.early_stop_metric]
            improved = score > best
            if improved:
                best, best_step, bad_vals, best_metrics = score, step, 0, dict(val)
            else:
                bad_vals += 1
            history.append({"step": step, **val})
            say(val_line(step, val, tc.early_stop_metric, improved))
            ckpt_dir = None
            if out is not None and rank == 0:
                ckpt_dir = save_step(out, step, editor, {"editor": editor.state_dict(),
                                     "optimizer": optimizer.state_dict(), "best": best, "best_step": best_step,
                                     "bad_vals": bad_vals, "best_metrics": best_metrics,
                                     # marks a state written with the editor fields of its config
                                     "editor_fields": sorted(LEGACY_EDITOR_FIELDS)}, val, to_dict(cfg))
                if improved:
                    write_best(out, step, tc.early_stop_metric, score)
            if hooks.on_validate:
                hooks.on_validate(step, val, ckpt_dir, improved)
            if bad_vals >= tc.early_stop_patience:
                stopped = "early_stop"
                say(f"[train] early stop: {tc.early_stop_metric} did not improve for {bad_vals} validations")
                break
            if out_of_time:
                stopped = "time_budget"
                say(f"[train] time budget of {tc.time_budget_s:.0f}s reached at step {step}")
                break
    best_ckpt = out / step_dir_name(best_step) / EDITOR_FILE if out is not None and best_step else None
    best_ckpt = best_ckpt if best_ckpt is not None and best_ckpt.exists() else None
    # No checkpoint path here: on Ray workers `out` is a temporary folder; the caller knows where the
    # kept checkpoints are.
    say(f"[train] done: {stopped} at step {step}; best {tc.early_stop_metric}={best:.4f} at step {best_step}")
    return TrainResult(best_metrics, best_step, step, best_ckpt, stopped, history)


def _agree(flag: bool) -> bool:
    """All workers take the same decision (the slowest clock rules)."""
    _, world = _world()
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _val_subset(records: list, per_task: int, seed: int) -> list:
    """A fixed val subset: up to `per_task` records of each task (stable order)."""
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    out = []
    for task in sorted(by_task):
        rs = sorted(by_task[task], key=lambda r: r.case_id)
        random.Random(seed).shuffle(rs)
        out += rs[:per_task]
    return out

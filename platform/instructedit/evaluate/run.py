"""One evaluation as the `instructedit evaluate` command runs it: what to evaluate, on which tasks
and records, with which instructions, where the results go and where they are logged.

`plan(request)` resolves the target (an editor checkpoint, an MLflow training run's checkpoint, or
an untrained method of the registry on a base model), the tasks (given, else the editor's training
tasks or the default run's, plus every hold-out task of the task registry), the instruction
setting and the output folder; `load(plan)` reads the records; `evaluate` runs them in batches
(runner.py, the batch engine) and `log` records the result in MLflow; `sequential` is the
cumulative-edit mode. The command only parses flags into an `EvalRequest` and prints.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig, RunConfig, task_names
from . import compare, runner
from .metrics import TABLE_METRICS, format_estimate, order


@dataclass(frozen=True)
class EvalRequest:
    """What `instructedit evaluate` was asked (one of editor, run, baseline)."""

    editor: str | None = None  # an editor.pt, a step folder or a training run folder
    run: str | None = None  # an MLflow training run id (its checkpoint artifact)
    baseline: str | None = None  # an untrained method of the registry
    model: str = "smollm2-135m"  # a baseline's base model
    hparams: dict = field(default_factory=dict)  # a baseline's overrides of configs/methods/<name>.yaml
    tasks: tuple[str, ...] = ()  # () = default_tasks(...)
    split: str = "test"
    instructions: str | None = None  # seen | unseen | id:<id> | none; None = the editor's, else seen
    instructed_probes: bool = True
    generation: bool = True
    gen_tokens: int = 0
    out: str | None = None  # None = evals/<what>/<split>-<setting>
    max_records: int | None = None
    batch_size: int = 16
    max_length: int = 128
    sequential: int | None = None  # K cumulative edits instead of independent ones
    workers: int = 1
    device: str = "auto"
    data_dir: str = ""
    prepared_dir: str = ""
    seed: int = 0
    tracking_uri: str | None = None
    experiment: str | None = None
    new_run: bool = False
    log: bool = True
    progress: bool = True
    label: str = ""  # the row name in comparison tables (tag `label`); "" = the method's name

    @property
    def has_target(self) -> bool:
        return bool(self.editor or self.run or self.baseline)


@dataclass
class EvalPlan:
    request: EvalRequest
    target: runner.EvalTarget
    tasks: list[str]
    setting: str  # the instruction setting of the *_instructed probes (and of instructed edits)
    instructed_edit: bool  # edit from the instructed input (editors trained with instructions)
    out: Path
    tags: dict  # MLflow tags of the evaluation (method, mode, tasks, instruction_setting, ...)
    info: dict = field(default_factory=dict)  # checkpoint_info, with the training run's tags
    editor_run: object | None = None  # the MLflow training run behind --run
    found: str = ""  # which checkpoint was taken and why (one line; "" for a baseline)


@dataclass(frozen=True)
class Logged:
    run_id: str
    line: str  # "logged to ..." for the terminal


def hold_out_tasks() -> list[str]:
    """Tasks whose YAML says `hold_out: true` (table order): never trained on, evaluated by default."""
    return task_names(hold_out=True)


def default_tasks(trained_on: list[str] | None = None) -> list[str]:
    """The tasks an evaluation covers unless told: the editor's training tasks (a baseline: the
    default run's), then every hold-out task."""
    trained = list(trained_on) if trained_on else list(DataConfig().tasks)
    return list(dict.fromkeys(trained + hold_out_tasks()))


def plan(req: EvalRequest) -> EvalPlan:
    """Resolve what to evaluate; a missing checkpoint, unknown run or bad hyperparameter fails here."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if req.device == "auto" else req.device
    if req.editor or req.run:
        from .. import tracking
        from ..api import resolve_checkpoint
        from ..editor.checkpoint import step_of

        # One resolver for a file, a step folder, a run folder (its best by validation) or a run id.
        found = resolve_checkpoint(req.editor or req.run, req.tracking_uri)
        checkpoint = str(found.path)
        run_folder = found.path.parent.parent.name if step_of(found.path.parent) is not None else ""
        editor_run = tracking.get_run(req.run, req.tracking_uri) if req.run else None
        info = runner.checkpoint_info(checkpoint)
        if editor_run is not None:
            # The checkpoint's own run config says how the editor was trained; the run's tags only
            # fill what it leaves out (a study trial's run is tagged with the setting it was *tested*
            # in: the instructions study's unseen arm trains on seen instructions).
            t = editor_run.data.tags
            info = {**{k: t[k] for k in ("mode", "tasks", "instruction_setting") if t.get(k)},
                    **{k: v for k, v in info.items() if v}}
        target = runner.EvalTarget("editor", checkpoint=checkpoint, device=device)
        tags = runner.method_tags("editor", info.get("mode", ""))
        tags["tasks"] = info.get("tasks", "")
        tags.update({k: info[k] for k in ("seed", "step") if info.get(k)})  # seeds are aggregated in tables
        defaults = default_tasks([t for t in info.get("tasks", "").split(",") if t])
        setting, instructed_edit = runner.instruction_use(info.get("instruction_setting", ""), req.instructions)
        name = req.run or run_folder or Path(checkpoint).resolve().parent.name
        extra = {"info": info, "editor_run": editor_run, "found": found.line()}
    else:
        target = runner.EvalTarget(req.baseline, model=req.model, device=device, hparams=req.hparams)
        target.hyperparameters()  # a flag the method does not take fails here, naming its YAML
        tags = {**runner.method_tags(req.baseline), "tasks": ""}
        defaults = default_tasks()
        # baselines are trained without instructions: they edit from the plain prompt
        setting, instructed_edit = runner.instruction_use("none", req.instructions)
        name = f"{req.baseline}-{req.model}"
        extra = {}
    tasks = list(dict.fromkeys(req.tasks or defaults))
    tags["instruction_setting"] = setting
    if req.label:
        tags["label"] = req.label
    out = Path(req.out or Path("evals") / name / f"{req.split}-{setting.replace(':', '_')}")
    return EvalPlan(req, target, tasks, setting, instructed_edit, out, tags, **extra)


def load(p: EvalPlan) -> list:
    """The records of the plan's tasks and split (prepared parquet, else the corpora). Their digest
    becomes the plan's `dataset_hash` tag, for a new evaluation run: one hash for the same test
    records whatever the instruction setting, so the report shows which methods read the same set."""
    from ..data.pipeline import load_records
    from ..data.record import digest_records

    r = p.request
    cfg = RunConfig(data=DataConfig(tasks=tuple(p.tasks), hold_out=(), data_dir=r.data_dir,
                                    prepared_dir=r.prepared_dir, instruction_setting=p.setting,
                                    seed=r.seed, max_records=r.max_records, on_error="skip"))
    records = load_records(cfg, r.split, p.tasks)
    h = hashlib.sha256()
    digest_records(h, records, instructions=False)
    p.tags["dataset_hash"] = h.hexdigest()
    return records


def evaluate(p: EvalPlan, records: list) -> runner.EvalResult:
    """Every record as an independent edit, in batches; resumable from `<out>/parts/`."""
    from .core import EvalOptions

    r = p.request
    options = EvalOptions(instructed_edit=p.instructed_edit, instructed_probes=r.instructed_probes,
                          generation=r.generation, gen_tokens=r.gen_tokens)
    return runner.run_evaluation(records, p.out, target=p.target, setting=p.setting, split=r.split,
                                 batch_size=r.batch_size, max_length=r.max_length, workers=r.workers,
                                 seed=r.seed, progress=r.progress, options=options)


def _logs_to_editor_run(p: EvalPlan) -> bool:
    """Results go to the training run itself when it was evaluated in its own instruction setting."""
    run = p.editor_run
    return (run is not None and run.data.tags.get("instruction_setting", p.setting) == p.setting
            and not p.request.new_run)


def log(p: EvalPlan, result: runner.EvalResult) -> Logged | None:
    """Metrics and artifacts to the editor's training run, else to a new eval run; `<out>/run.json`
    records which (the comparison tables read its tags)."""
    from .. import tracking

    r = p.request
    logged = None
    if r.log and _logs_to_editor_run(p):
        rid = runner.log_results(result, r.split, run_id=r.run, tracking_uri=r.tracking_uri)
        logged = Logged(rid, f"logged to editor {tracking.logged_to(rid, r.tracking_uri)}")
    elif r.log:
        experiment = r.experiment or p.info.get("experiment") or "instructedit"
        extra = {"model": p.info.get("model") or r.model}
        if p.editor_run is not None:
            extra["editor_run"] = r.run
        tasks = sorted(result.cases["task"].unique()) if len(result.cases) else []
        params = {"eval.split": r.split, "eval.batch_size": r.batch_size, "eval.max_records": r.max_records,
                  "eval.max_length": r.max_length, "eval.instructed_edit": p.instructed_edit,
                  "eval.generation": r.generation, "eval.gen_tokens": r.gen_tokens,
                  "eval.checkpoint": p.target.checkpoint, "eval.tasks": ",".join(tasks), **p.target.params()}
        rid = runner.log_results(result, r.split, experiment=experiment, tags={**p.tags, **extra}, params=params,
                                 tracking_uri=r.tracking_uri, run_name=f"eval-{p.tags['mode']}-{r.split}-{p.setting}")
        logged = Logged(rid, f"logged to new eval {tracking.logged_to(rid, r.tracking_uri, experiment)}")
    (p.out / "run.json").write_text(json.dumps({"run_id": logged.run_id if logged else "", "tags": p.tags},
                                               indent=1))
    return logged


def summary_lines(summary: dict, split: str) -> list[str]:
    """One line per task: plain (headline) metrics first, then instructed, each `mean [low, high] n=N`."""
    lines = []
    for task in [t for t in summary if t != "avg"] + (["avg"] if "avg" in summary else []):
        cells = [f"{m}={format_estimate(e['mean'], e['ci_low'], e['ci_high'], e['n'], m)} n={e['n']}"
                 for m, e in ((m, summary[task][m]) for m in order(summary[task]))]
        lines.append(f"{split}/{task}: " + "  ".join(cells))
    return lines


def sequential(p: EvalPlan, records: list) -> tuple[list[dict], Path]:
    """K edits applied cumulatively to one model (K = request.sequential) -> rows per K and
    `<out>/sequential.csv`."""
    from ..data.instructions import retag
    from .sequential import evaluate_sequential

    r = p.request
    records = retag(records, p.setting, r.seed)[: r.sequential]
    editor, make = runner.build(p.target)
    rows = evaluate_sequential(editor, records, make, None, r.max_length, progress=r.progress,
                               instructed_edit=p.instructed_edit)
    p.out.mkdir(parents=True, exist_ok=True)
    path = p.out / "sequential.csv"
    cols = ["k"] + sorted({c for row in rows for c in row} - {"k"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    return rows, path


def log_sequential(p: EvalPlan, rows: list[dict], path: Path) -> Logged | None:
    """Sequential rows as metrics per K: to the editor's run (--run), else to a new eval run."""
    from .. import tracking
    from .sequential import sequential_metrics

    r = p.request
    if not r.log:
        return None
    rid = r.run if p.editor_run is not None and not r.new_run else None
    if rid is None:
        with tracking.run(r.experiment or p.info.get("experiment") or "instructedit",
                          f"sequential-{p.tags['mode']}-{p.setting}", tracking_uri=r.tracking_uri,
                          tags={"kind": "eval", **p.tags, "sequential": str(r.sequential)}) as new:
            rid = new
    else:
        tracking.configure(r.tracking_uri)
    for k, m in sequential_metrics(rows):
        tracking.log_metrics(m, step=k, run_id=rid)
    tracking.log_artifact(path, f"eval/{r.split}", run_id=rid)
    return Logged(rid, f"logged to {tracking.logged_to(rid, r.tracking_uri)}")


# ---------------------------------------------------------------------------- comparison table
class NotAnEvalFolder(ValueError):
    """--compare-table got something without per-case results."""


def compare_folder(src: str | Path) -> tuple[str, Path]:
    """Per-case results under `src` -> the interval table (seeds aggregated, the cases every
    method shares), the paired differences and the instruction gaps (compare.comparison), as
    Markdown, written to `src/table.md`."""
    src = Path(src)
    if not (src.is_dir() and any(src.rglob("cases.parquet"))):
        if src.exists():
            raise NotAnEvalFolder(f"--compare-table {src}: no cases.parquet under it (the per-case output "
                                  "of `instructedit evaluate --out DIR`)")
        # an MLflow experiment's Table 3 is the analysis layer's: the report
        raise NotAnEvalFolder(f"--compare-table reads evaluation folders; {src} is not one (for an MLflow "
                              f"experiment's Table 3: instructedit report --experiment {src})")
    text = compare.comparison(compare.read_cases(src), list(TABLE_METRICS))
    path = src / "table.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return text, path

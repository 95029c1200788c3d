"""`instructedit evaluate`: an editor (checkpoint or MLflow run) or a baseline on tasks and a split."""

from __future__ import annotations

import sys

from ..editor import methods

BASELINES = methods.names(trained=False)
HELP = f"evaluate an editor or a baseline ({', '.join(BASELINES)}): batched, resumable, logged to MLflow"
DESCRIPTION = (
    "Evaluates an editor checkpoint (--editor), the checkpoint of an MLflow training run (--run), or a "
    f"baseline (--baseline {'|'.join(BASELINES)} on --model) on the given tasks and split, each record as an "
    "independent edit, in batches. Per-case rows go to <out>/cases.parquet (a killed run resumes from "
    "<out>/parts/), averages to <out>/summary.csv, and both plus the test/<task>/<metric> metrics to "
    "MLflow. --sequential K applies K edits cumulatively instead. --compare-table DIR prints and writes "
    "the per-case comparison (intervals, paired differences) of every evaluation under DIR; an MLflow "
    "experiment's Table 3 is `instructedit report --experiment NAME`."
)

DEFAULT_TASKS = ("counterfact", "recent", "convsent", "zsre")


def add_arguments(p) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--editor", metavar="CKPT", help="editor checkpoint: an editor.pt, a step folder, or a "
                      "training run folder (its best checkpoint by validation)")
    what.add_argument("--run", metavar="RUN_ID", help="MLflow training run whose checkpoint/ artifact to evaluate "
                      "(results are logged to that run)")
    what.add_argument("--baseline", choices=BASELINES, help="evaluate an untrained method instead of an editor "
                      "(hyperparameters: configs/methods/<name>.yaml)")
    p.add_argument("--model", default="smollm2-135m", help="base model of a baseline (models registry name)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="tasks (space or comma separated; default: the editor's tasks + hold-out, or all)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split's records")
    p.add_argument("--instructions", default=None, metavar="SETTING",
                   help="seen | unseen | id:<instruction id> | none: the instruction of the *_instructed probe "
                   "columns, for every method alike, and the edit input of instruction-trained editors "
                   "(default: the editor's training setting, else seen)")
    p.add_argument("--no-instructed", action="store_true",
                   help="skip the *_instructed probe columns (headline metrics are always on plain probes)")
    p.add_argument("--no-generation", action="store_true",
                   help="skip the generation-based metrics (reliability_gen, generalization_gen, locality_gen)")
    p.add_argument("--gen-tokens", type=int, default=0, metavar="N",
                   help="new tokens per greedy continuation (0 = the batch's longest answer + 2)")
    p.add_argument("--out", default=None, help="output folder (default: evals/<what>/<split>-<setting>)")
    p.add_argument("--max-records", type=int, default=None, help="at most N records per task")
    p.add_argument("--batch-size", type=int, default=16, help="independent edits per batch")
    p.add_argument("--max-length", type=int, default=128, help="token cap of one sequence")
    p.add_argument("--sequential", type=int, default=None, metavar="K",
                   help="apply K edits cumulatively to one model and report rows per K")
    p.add_argument("--workers", type=int, default=1, help="Ray actors to spread batches over (1 = this process)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--data-dir", default="", help="corpora folder (default: $INSTRUCTEDIT_DATA or ../shared/data)")
    p.add_argument("--prepared-dir", default="", help="parquet written by `instructedit prepare`")
    p.add_argument("--seed", type=int, default=0, help="instruction tagging seed")
    p.add_argument("--ftl-steps", type=int, default=None, help="FT-L gradient steps per edit (default: ft-l.yaml)")
    p.add_argument("--ftl-lr", type=float, default=None, help="FT-L step size (default: ft-l.yaml)")
    p.add_argument("--ftl-norm-bound", type=float, default=None,
                   help="FT-L max Frobenius norm per edit and weight (default: ft-l.yaml)")
    p.add_argument("--key-stats-text", default=None, metavar="FILE",
                   help="ROME/MEMIT/AlphaEdit: key statistics from this text file, one text per line "
                   "(default: the corpora's train prompts and sentences; cached per model, layer and text)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else the "
                   "project's sqlite store <checkout>/mlruns/mlflow.db)")
    p.add_argument("--experiment", default=None, help="experiment of a new eval run (default: the editor's, "
                   "else instructedit)")
    p.add_argument("--new-run", action="store_true", help="log to a new eval run even with --run")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    p.add_argument("--compare-table", default=None, metavar="DIR",
                   help="print and write DIR/table.md, the comparison of the evaluations under DIR (alone, or "
                   "after this evaluation)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _tasks(values) -> list[str]:
    return [t for v in values for t in v.split(",") if t]


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from ..config import DataConfig, RunConfig
    from ..evaluate import runner

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    if not (args.editor or args.run or args.baseline):
        if not args.compare_table:
            print("instructedit evaluate: give --editor, --run, --baseline or --compare-table", file=sys.stderr)
            return 2
        return _compare(args)

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    info: dict = {}
    editor_run = None
    run_folder = ""
    if args.editor or args.run:
        from ..api import resolve_checkpoint
        from ..editor.checkpoint import step_of

        # One resolver for a file, a step folder, a run folder (its best by validation) or a run id.
        found = resolve_checkpoint(args.editor or args.run, args.tracking_uri)
        print(found.line(), file=sys.stderr, flush=True)
        args.editor = str(found.path)
        run_folder = found.path.parent.parent.name if step_of(found.path.parent) is not None else ""
    if args.run:
        from .. import tracking

        editor_run = tracking.get_run(args.run, args.tracking_uri)
    if args.editor:
        info = runner.checkpoint_info(args.editor)
        if editor_run is not None:
            t = editor_run.data.tags
            info = {**info, **{k: t[k] for k in ("mode", "tasks", "instruction_setting") if t.get(k)}}
        target = runner.EvalTarget("editor", checkpoint=str(args.editor), device=device)
        tags = runner.method_tags("editor", info.get("mode", ""))
        tags["tasks"] = info.get("tasks", "")
        tags.update({k: info[k] for k in ("seed", "step") if info.get(k)})  # seeds are aggregated in tables
        default_tasks = [t for t in info.get("tasks", "").split(",") if t] + ["zsre"]
        trained_with = info.get("instruction_setting") or "none"
        instructed_edit = trained_with != "none"  # edit from the instructed input only if trained on it
        setting = args.instructions or (trained_with if instructed_edit else "seen")
        name = args.run or run_folder or Path(args.editor).resolve().parent.name
    else:
        hparams = {k: v for k, v in (("steps", args.ftl_steps), ("lr", args.ftl_lr),
                                      ("norm_bound", args.ftl_norm_bound)) if v is not None}
        if args.key_stats_text:
            if not Path(args.key_stats_text).is_file():
                print(f"instructedit evaluate: --key-stats-text {args.key_stats_text}: no such file", file=sys.stderr)
                return 2
            hparams["stats"] = {"text_file": str(Path(args.key_stats_text).resolve())}
        target = runner.EvalTarget(args.baseline, model=args.model, device=device, hparams=hparams)
        target.hyperparameters()  # a flag the method does not take fails here, naming its YAML
        tags = {**runner.method_tags(args.baseline), "tasks": ""}
        default_tasks = list(DEFAULT_TASKS)
        instructed_edit = False  # baselines edit from the plain prompt
        setting = args.instructions or "seen"
        name = f"{args.baseline}-{args.model}"
    tasks = list(dict.fromkeys(_tasks(args.tasks) if args.tasks else default_tasks))
    tags["instruction_setting"] = setting
    out = Path(args.out or Path("evals") / name / f"{args.split}-{setting.replace(':', '_')}")

    from ..data.pipeline import load_records

    cfg = RunConfig(data=DataConfig(tasks=tuple(tasks), hold_out=(), data_dir=args.data_dir,
                                    prepared_dir=args.prepared_dir, instruction_setting=setting,
                                    seed=args.seed, max_records=args.max_records, on_error="skip"))
    records = load_records(cfg, args.split, tasks)
    say(f"[eval] {tags['method']} on {', '.join(tasks)} ({args.split}, instructions {setting}): "
        f"{len(records)} records, device {device}")

    if args.sequential:
        return _sequential(args, target, records, setting, out, tags, editor_run, info, say, instructed_edit)

    from ..evaluate.core import EvalOptions

    options = EvalOptions(instructed_edit=instructed_edit, instructed_probes=not args.no_instructed,
                          generation=not args.no_generation, gen_tokens=args.gen_tokens)
    result = runner.run_evaluation(records, out, target=target, setting=setting, split=args.split,
                                   batch_size=args.batch_size, max_length=args.max_length,
                                   workers=args.workers, seed=args.seed, progress=not args.quiet,
                                   options=options)
    _print_summary(result.summary, args.split)
    rid = _log(args, result, tags, editor_run, info, setting, instructed_edit, target)
    (out / "run.json").write_text(json.dumps({"run_id": rid or "", "tags": tags}, indent=1))
    print(f"cases:   {result.cases_path}\nsummary: {result.summary_json_path}")
    if args.compare_table:
        return _compare(args)
    return 0


def _log(args, result, tags, editor_run, info, setting, instructed_edit: bool, target=None) -> str | None:
    if args.no_log:
        return None
    from ..evaluate import runner

    same_setting = editor_run is not None and editor_run.data.tags.get("instruction_setting", setting) == setting
    if editor_run is not None and same_setting and not args.new_run:
        rid = runner.log_results(result, args.split, run_id=args.run, tracking_uri=args.tracking_uri)
        from .. import tracking

        print(f"logged to editor {tracking.logged_to(rid, args.tracking_uri)}")
        return rid
    experiment = args.experiment or info.get("experiment") or "instructedit"
    extra = {"model": info.get("model") or args.model}
    if editor_run is not None:
        extra["editor_run"] = args.run
    rid = runner.log_results(result, args.split, experiment=experiment, tags={**tags, **extra},
                             params={"eval.split": args.split, "eval.batch_size": args.batch_size,
                                     "eval.max_records": args.max_records, "eval.max_length": args.max_length,
                                     "eval.instructed_edit": instructed_edit, "eval.generation": not args.no_generation,
                                     "eval.gen_tokens": args.gen_tokens,
                                     "eval.checkpoint": args.editor or "", "eval.tasks": ",".join(
                                         sorted(result.cases["task"].unique()) if len(result.cases) else []),
                                     **(target.params() if target is not None else {})},
                             tracking_uri=args.tracking_uri,
                             run_name=f"eval-{tags['mode']}-{args.split}-{setting}")
    from .. import tracking

    print(f"logged to new eval {tracking.logged_to(rid, args.tracking_uri, experiment)}")
    return rid


def _print_summary(summary: dict, split: str) -> None:
    """One line per task: plain (headline) metrics first, then instructed, each `mean [ci] n`."""
    from ..evaluate.metrics import METRICS, order

    for task in [t for t in summary if t != "avg"] + (["avg"] if "avg" in summary else []):
        cells = []
        for m in order(summary[task]):
            e = summary[task][m]
            k = METRICS[m].scale if m in METRICS else 1.0
            cells.append(f"{m}={e['mean'] * k:.1f} [{e['ci_low'] * k:.1f}, {e['ci_high'] * k:.1f}] n={e['n']}")
        print(f"{split}/{task}: " + "  ".join(cells))


def _sequential(args, target, records, setting, out, tags, editor_run, info, say, instructed_edit: bool) -> int:
    import csv

    from ..data.instructions import retag
    from ..evaluate import runner
    from ..evaluate.sequential import evaluate_sequential, sequential_metrics

    records = retag(records, setting, args.seed)[: args.sequential]
    editor, make = runner.build(target)
    rows = evaluate_sequential(editor, records, make, None, args.max_length, progress=not args.quiet,
                               instructed_edit=instructed_edit)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["k"] + sorted({c for r in rows for c in r} - {"k"})
    with open(out / "sequential.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"K={r['k']} " + " ".join(f"{m}={v:.3f}" for m, v in r.items() if m != "k" and v is not None))
    print(f"sequential: {out / 'sequential.csv'}")
    if not args.no_log:
        from .. import tracking

        rid = args.run if editor_run is not None and not args.new_run else None
        if rid is None:
            with tracking.run(args.experiment or info.get("experiment") or "instructedit",
                              f"sequential-{tags['mode']}-{setting}", tracking_uri=args.tracking_uri,
                              tags={"kind": "eval", **tags, "sequential": str(args.sequential)}) as new:
                rid = new
        else:
            tracking.configure(args.tracking_uri)
        for k, m in sequential_metrics(rows):
            tracking.log_metrics(m, step=k, run_id=rid)
        tracking.log_artifact(out / "sequential.csv", f"eval/{args.split}", run_id=rid)
        print(f"logged to {tracking.logged_to(rid, args.tracking_uri)}")
    return 0


def _compare(args) -> int:
    from pathlib import Path

    src = Path(args.compare_table)
    if src.is_dir() and any(src.rglob("cases.parquet")):
        return _compare_cases(src)
    if src.exists():
        print(f"instructedit evaluate: --compare-table {src}: no cases.parquet under it (the per-case output "
              "of `instructedit evaluate --out DIR`)", file=sys.stderr)
    else:  # an MLflow experiment's Table 3 is the analysis layer's: the report
        print(f"instructedit evaluate: --compare-table reads evaluation folders; {src} is not one (for an MLflow "
              f"experiment's Table 3: instructedit report --experiment {src})", file=sys.stderr)
    return 2


# Columns of the interval table: headline (plain) metrics, then instructed and generation-based.
COMPARE_METRICS = ["reliability", "generalization", "portability", "locality", "es", "dd",
                   "reliability_instructed", "generalization_instructed", "portability_instructed", "es_instructed",
                   "reliability_gen", "generalization_gen", "locality_gen"]


def _compare_cases(src) -> int:
    """Per-case results under `src` -> the interval table (seeds aggregated) and the paired
    InstructEdit - MEND (multi-task) differences, printed and written as Markdown."""
    from ..evaluate import compare

    df = compare.read_cases(src)
    text = "## Methods (mean [95% bootstrap CI], x100 except dd)\n\n" + compare.long_table(df, COMPARE_METRICS)
    methods = set(df["method"])
    for a, b in (("InstructEdit", "MEND (multi-task)"), ("InstructEdit", "Pre-edit")):
        if {a, b} <= methods:
            text += f"\n\n## {a} - {b}, paired\n\n" + compare.difference_table(df, a, b, COMPARE_METRICS)
    print(text)
    path = src / "table.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    print(f"table: {path}")
    return 0

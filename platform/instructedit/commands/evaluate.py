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
    p.add_argument("--label", default="", metavar="NAME",
                   help="row name of this evaluation in --compare-table (default: the method's name; "
                        "names variants of one method apart)")


def _tasks(values) -> tuple[str, ...]:
    return tuple(t for v in values or () for t in v.split(",") if t)


def request(args):
    """The parsed flags as a typed evaluation request."""
    from pathlib import Path

    from ..evaluate.run import EvalRequest

    hparams = {k: v for k, v in (("steps", args.ftl_steps), ("lr", args.ftl_lr),
                                  ("norm_bound", args.ftl_norm_bound)) if v is not None}
    if args.key_stats_text:
        hparams["stats"] = {"text_file": str(Path(args.key_stats_text).resolve())}
    return EvalRequest(
        editor=args.editor, run=args.run, baseline=args.baseline, model=args.model, hparams=hparams,
        tasks=_tasks(args.tasks), split=args.split, instructions=args.instructions,
        instructed_probes=not args.no_instructed, generation=not args.no_generation, gen_tokens=args.gen_tokens,
        out=args.out, max_records=args.max_records, batch_size=args.batch_size, max_length=args.max_length,
        sequential=args.sequential, workers=args.workers, device=args.device, data_dir=args.data_dir,
        prepared_dir=args.prepared_dir, seed=args.seed, tracking_uri=args.tracking_uri,
        experiment=args.experiment, new_run=args.new_run, log=not args.no_log, progress=not args.quiet,
        label=args.label)


def run(args) -> int:
    from pathlib import Path

    from ..evaluate import run as ev

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    req = request(args)
    if not req.has_target:
        if not args.compare_table:
            print("instructedit evaluate: give --editor, --run, --baseline or --compare-table", file=sys.stderr)
            return 2
        return _compare(args.compare_table)
    if req.baseline and args.key_stats_text and not Path(args.key_stats_text).is_file():
        print(f"instructedit evaluate: --key-stats-text {args.key_stats_text}: no such file", file=sys.stderr)
        return 2
    plan = ev.plan(req)
    if plan.found:
        print(plan.found, file=sys.stderr, flush=True)
    records = ev.load(plan)
    say(f"[eval] {plan.tags['method']} on {', '.join(plan.tasks)} ({req.split}, instructions {plan.setting}): "
        f"{len(records)} records, device {plan.target.device}")

    if req.sequential:
        rows, path = ev.sequential(plan, records)
        for r in rows:
            print(f"K={r['k']} " + " ".join(f"{m}={v:.3f}" for m, v in r.items() if m != "k" and v is not None))
        print(f"sequential: {path}")
        logged = ev.log_sequential(plan, rows, path)
        if logged:
            print(logged.line)
        return 0

    result = ev.evaluate(plan, records)
    print("\n".join(ev.summary_lines(result.summary, req.split)))
    logged = ev.log(plan, result)
    if logged:
        print(logged.line)
    print(f"cases:   {result.cases_path}\nsummary: {result.summary_json_path}")
    return _compare(args.compare_table) if args.compare_table else 0


def _compare(src: str) -> int:
    from ..evaluate.run import NotAnEvalFolder, compare_folder

    try:
        text, path = compare_folder(src)
    except NotAnEvalFolder as e:
        print(f"instructedit evaluate: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"table: {path}")
    return 0

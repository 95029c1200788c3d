"""`instructedit optimize-instructions`: write, score and refine a task's instructions with an LLM."""

from __future__ import annotations

import argparse
import sys

from ..instructions.backends import BACKENDS

HELP = "write task instructions with an LLM, score them with trial editors, refine until no gain"
DESCRIPTION = (
    "From the task's description, an LLM (an OpenAI-compatible server, or a local chat model, "
    "default smollm2-135m, offline) writes candidate instructions; each is scored by a trial editor "
    "(a short training on a subset of the task plus validation, as parallel Ray tasks); the scores go "
    "back to the LLM, which writes better ones, until the best score stops improving for --patience "
    "rounds or --rounds is spent. The best instructions are saved as a versioned instruction set "
    "(select it with data.instruction_set=NAME); everything is logged to one MLflow run (kind=optimize). "
    "Completions and scores are cached on disk: a rerun with the same seed makes no new calls. "
    "The OpenAI API key is read only from $OPENAI_API_KEY or a key file ($OPENAI_API_KEY_FILE or "
    "--api-key-file), never from the command line."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (configs/tasks/<task>.yaml)")
    w = p.add_argument_group("writer")
    w.add_argument("--backend", choices=BACKENDS, default="local",
                   help="who writes: an OpenAI-compatible server, or a local registry chat model (offline)")
    w.add_argument("--model", help="openai: served model name ($OPENAI_MODEL, gpt-4o-mini); "
                                   "local: registry model (smollm2-135m)")
    w.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1 ($OPENAI_BASE_URL)")
    w.add_argument("--api-key-file", help="openai: file holding the API key (else $OPENAI_API_KEY_FILE, "
                                          "$OPENAI_API_KEY)")
    w.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
    w.add_argument("--max-retries", type=int, default=4, help="openai: retries on 429/5xx/timeouts")
    w.add_argument("--temperature", type=float, help="sampling temperature (openai 1.0, local 0.9)")
    w.add_argument("--max-tokens", type=int, help="length cap of one completion (openai 200, local 80)")
    o = p.add_argument_group("optimiser")
    o.add_argument("--rounds", type=int, default=5, help="round budget")
    o.add_argument("--candidates", type=int, default=4, help="new candidates per round")
    o.add_argument("--patience", type=int, default=2, help="stop after P rounds without a better best")
    o.add_argument("--seed", type=int, default=0, help="seed of sampling, subsets and trial editors")
    o.add_argument("--keep", type=int, default=0, help="instructions saved (0 = the task's seen pool size)")
    o.add_argument("--slot-policy", choices=("repair", "reject"), default="repair",
                   help="candidates missing the task's slots ([LABEL], [TOPIC]) are repaired or rejected")
    o.add_argument("--set-name", default="optimized", help="instruction set to write ('' = do not save)")
    o.add_argument("--cache-dir", default="", help="completion/score cache ($INSTRUCTEDIT_CACHE/instruction_writer)")
    o.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="score candidates as parallel Ray tasks, or in this process")
    s = p.add_argument_group("scorer")
    s.add_argument("--scorer", choices=("trial", "length"), default="trial",
                   help="trial: a short editor training + validation; length: a cheap stand-in (dry runs)")
    s.add_argument("--trial-config", help="run YAML the trial editor starts from (model, editor, data)")
    s.add_argument("--trial-model", help="model of the trial editor (default: the run config's)")
    s.add_argument("--trial-steps", type=int, default=30, help="training steps of one trial editor")
    s.add_argument("--trial-records", type=int, default=32, help="training records per trial")
    s.add_argument("--trial-val-records", type=int, default=16, help="validation records per trial")
    s.add_argument("--trial-batch-size", type=int, default=4, help="batch size of a trial editor's training")
    s.add_argument("--trial-cpus", type=float, default=1, help="CPUs per trial (Ray resources)")
    s.add_argument("--trial-gpus", type=float, default=0, help="GPUs per trial (Ray resources)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the trial run config, e.g. data.prepared_dir=prepared (repeatable)")
    p.add_argument("--experiment", default="instructedit", help="MLflow experiment")
    p.add_argument("--tracking-uri", default="", help="MLflow store ($MLFLOW_TRACKING_URI, else the project's "
                   "sqlite store <checkout>/mlruns/mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="only the final summary")


def _scorer(args: argparse.Namespace):
    from ..instructions.scoring import LengthScorer, TrialEditorScorer

    if args.scorer == "length":
        return LengthScorer()
    from ..config import apply_overrides, load_run_config, parse_overrides

    base = load_run_config(args.trial_config) if args.trial_config else load_run_config(None)
    if args.set:
        base = apply_overrides(base, parse_overrides(args.set))
    return TrialEditorScorer(
        base=base, model=args.trial_model or "", max_steps=args.trial_steps, train_records=args.trial_records,
        val_records=args.trial_val_records, batch_size=args.trial_batch_size, seed=args.seed,
        use_gpu="true" if args.trial_gpus > 0 else "false",
    )


def _writer(args: argparse.Namespace):
    from ..instructions.backends import make_writer

    if args.backend == "openai":
        kw = {"base_url": args.base_url, "api_key_file": args.api_key_file, "timeout": args.timeout,
              "max_retries": args.max_retries}
    else:
        kw = {}
    if args.temperature is not None:
        kw["temperature"] = args.temperature
    if args.max_tokens is not None:
        kw["max_tokens" if args.backend == "openai" else "max_new_tokens"] = args.max_tokens
    return make_writer(args.backend, args.model, **kw)


def run(args: argparse.Namespace) -> int:
    from .. import tracking
    from ..config import load_task
    from ..instructions.optimizer import OptimizeConfig, OptimizeError, optimize
    from ..instructions.writer import WriterError

    task = load_task(args.task)
    cfg = OptimizeConfig(
        rounds=args.rounds, candidates=args.candidates, patience=args.patience, seed=args.seed, keep=args.keep,
        slot_policy=args.slot_policy, executor=args.executor, trial_cpus=args.trial_cpus,
        trial_gpus=args.trial_gpus, set_name=args.set_name, experiment=args.experiment,
        tracking_uri=args.tracking_uri, cache_dir=args.cache_dir,
    )
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    try:
        writer = _writer(args)
        result = optimize(task, writer, _scorer(args), cfg, progress=progress)
    except ValueError as e:  # bad settings, found before or while starting
        print(f"instructedit optimize-instructions: error: {e}", file=sys.stderr)
        return 2
    except (WriterError, OptimizeError) as e:  # the writer or the search failed: a failed run
        print(f"instructedit optimize-instructions: {e}", file=sys.stderr)
        return 1
    print(f"\n{'round':>5} {'new':>4} {'round best':>10} {'best so far':>11}")
    for r in result.rounds:
        rb = f"{r.best_in_round:.4f}" if r.best_in_round is not None else "-"
        bs = f"{r.best_so_far:.4f}" if r.best_so_far is not None else "-"
        print(f"{r.round:>5} {r.new:>4} {rb:>10} {bs:>11}{'  *' if r.improved else ''}")
    print(f"stopped: {result.stopped}; LLM calls {result.llm_calls} (cached {result.llm_cache_hits}), "
          f"trials {result.trials} (cached {result.score_cache_hits}); logged to "
          f"{tracking.logged_to(result.run_id, args.tracking_uri or None, args.experiment)}")
    for c in result.best:
        print(f"  {c.score:.4f}  {c.text}")
    if result.set_path:
        print(f"instruction set {args.set_name!r} v{result.set_version}: {result.set_path}")
    return 0

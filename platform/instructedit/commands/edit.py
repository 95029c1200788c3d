"""`instructedit edit`: apply a trained editor (or an untrained method) to a model and show (or save) the result."""

from __future__ import annotations

import argparse
import sys

from ..editor import methods

UNTRAINED = [m for m in methods.names(trained=False) if not methods.get(m).reference]

HELP = "apply a trained editor or a baseline method to a model: change facts, compare before/after, save it"
DESCRIPTION = (
    "Apply a trained editor (an editor.pt, a step folder, a training run folder - its best checkpoint "
    "by validation - or an MLflow run id) to its base model, or an untrained method (--method "
    f"{'|'.join(UNTRAINED)}, on --model, edits from the plain prompt). Every request is edited independently "
    "from the unedited model and the edits are summed into the weights. For each request it prints "
    "the greedy continuation of the prompt and of each rephrase before and after the edit, and the "
    "probability of the target's answer tokens before and after; --compare adds the top next tokens "
    "and a locality check: unrelated prompts (the requests' own `locality` prompts, else the built-in "
    "general facts of configs/locality_facts.yaml, plus every --locality) answered before and after, "
    "a changed answer flagged CHANGED. --save DIR writes the edited model (save_pretrained + "
    "tokenizer) with MODEL_CARD.md (edits and locality check) and edits.json; nothing is written if "
    "anything fails. Exit code 2 on bad input (missing or foreign checkpoint, checkpoint for another "
    "model, empty target, unknown task, bad JSONL line)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--editor", metavar="CKPT", help="editor checkpoint: an editor.pt, a step folder, or a training "
                     "run folder (its best checkpoint by validation)")
    src.add_argument("--run", metavar="RUN_ID", help="MLflow run id whose 'checkpoint' artifact holds the editor")
    src.add_argument("--method", choices=UNTRAINED, help="an untrained method instead of an editor, on --model "
                     "(hyperparameters: configs/methods/<method>.yaml)")
    p.add_argument("--prompt", help="the prompt whose completion changes")
    p.add_argument("--target", help="the new answer")
    p.add_argument("--subject", default="", help="the subject (ConvSent: the topic)")
    p.add_argument("--task", default="", help="task whose instruction (and template) the edit uses")
    p.add_argument("--instruction", default="", help="explicit instruction text (overrides --task's pool)")
    p.add_argument("--label", default="", choices=("positive", "negative"),
                   help="ConvSent target sentiment (fills the [LABEL] slot)")
    p.add_argument("--rephrase", action="append", default=[], metavar="R",
                   help="a rephrased prompt to check (repeatable)")
    p.add_argument("--requests", metavar="FILE.jsonl",
                   help="edit requests, one JSON object per line: prompt, target, subject, rephrases, task, "
                        "instruction, label")
    p.add_argument("--model", help="registry model to edit (unset: the checkpoint's base model; --method: "
                   "smollm2-135m)")
    p.add_argument("--save", metavar="DIR", help="write the edited model here (must not exist or be empty)")
    p.add_argument("--compare", action="store_true",
                   help="also show the top next tokens and check unrelated prompts before and after")
    p.add_argument("--locality", action="append", default=[], metavar="PROMPT",
                   help="an unrelated prompt whose answer must not change (repeatable; implies the locality check)")
    p.add_argument("--top-k", type=int, default=5, help="next tokens shown with --compare")
    p.add_argument("--max-new-tokens", type=int, default=20, help="length of the greedy continuations")
    p.add_argument("--instruction-seed", type=int,
                   help="pick each request's instruction by a seeded choice (unset: the task's first seen one)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    p.add_argument("--tracking-uri", help="MLflow store for --run (unset: $MLFLOW_TRACKING_URI, else the project's "
                   "store)")


def _fail(msg: str) -> int:
    print(f"instructedit edit: error: {msg}", file=sys.stderr)
    return 2


def _short(text: str, n: int = 90) -> str:
    """Cut to n characters; callers print it with !r, which already shows newlines as \\n."""
    return text if len(text) <= n else text[: n - 3] + "..."


def _fmt_top(top) -> str:
    return "  ".join(f"{t!r} {p:.3f}" for t, p in top)


def render_locality(result) -> list[str]:
    if not result.locality:
        return []
    sources = ", ".join(dict.fromkeys(p.source for p in result.locality))
    lines = [f"=== locality: {len(result.locality)} unrelated prompt(s) ({sources}); {len(result.changed)} changed"]
    for p in result.locality:
        flag = "CHANGED" if p.changed else "same"
        expect = f"  expected {p.answer!r}" if p.answer else ""
        probs = (f"  P(expected) {p.p_before:.3g} -> {p.p_after:.3g}" if p.p_before is not None and
                 p.p_after is not None else "")
        lines.append(f"  [{flag}] {_short(p.prompt)}{expect}{probs}")
        lines.append(f"    before: {_short(p.before or '', 100)!r}")
        lines.append(f"    after:  {_short(p.after or '', 100)!r}")
    return lines


def render(result, compare: bool) -> str:
    lines = []
    for n, info in enumerate(result, 1):
        req = info.request
        lines.append(f"=== edit {n}/{len(result)}: {_short(req.prompt)!s} -> {req.target!r}")
        if info.instruction:
            lines.append(f"    instruction [{info.instruction_id}]: {_short(info.instruction, 110)}")
        if info.note:
            lines.append(f"    note: {info.note}")
        for p in info.probes:
            label = {"edit_input": "edit input (instructed)", "prompt": "prompt", "rephrase": "rephrase"}[p.kind]
            lines.append(f"  [{label}] {_short(p.text) if p.kind != 'edit_input' else ''}".rstrip())
            lines.append(f"    P(target) {p.p_before:.3g} -> {p.p_after:.3g}   per token "
                         f"{[round(x, 3) for x in p.token_p_before]} -> {[round(x, 3) for x in p.token_p_after]}")
            if p.continuation_before is not None:
                lines.append(f"    before: {_short(p.continuation_before, 100)!r}")
                lines.append(f"    after:  {_short(p.continuation_after or '', 100)!r}")
            if compare and p.top_before:
                lines.append(f"    next before: {_fmt_top(p.top_before)}")
                lines.append(f"    next after:  {_fmt_top(p.top_after)}")
    lines += render_locality(result)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..api import (
        EditRequest,
        RequestError,
        check_save_target,
        load_editor,
        load_method,
        locality_probes,
        read_requests,
    )
    from ..config import ConfigError
    from ..editor.mend import CheckpointMismatch

    # Check everything cheap before loading anything.
    if args.requests and (args.prompt or args.target is not None):
        return _fail("give either --requests or --prompt/--target, not both")
    try:
        if args.requests:
            requests = read_requests(args.requests)
        else:
            if not args.prompt or args.target is None:
                return _fail("give --prompt and --target (or --requests FILE.jsonl)")
            requests = [EditRequest(prompt=args.prompt, target=args.target, subject=args.subject,
                                    rephrases=list(args.rephrase), task=args.task, instruction=args.instruction,
                                    label=args.label, source="command line").validate()]
        if args.save:
            check_save_target(Path(args.save))
        if any(not q.strip() for q in args.locality):
            raise RequestError("--locality: empty prompt")
        # Checked whenever it is asked for or a model is saved: the card must show what the edit touched.
        locality = locality_probes(requests, args.locality) if (args.compare or args.locality or args.save) else []
    except (RequestError, FileExistsError) as e:
        return _fail(str(e))
    if args.max_new_tokens < 0 or args.top_k < 1:
        return _fail("--max-new-tokens must be >= 0 and --top-k >= 1")

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        if args.method:
            editor = load_method(args.method, args.model or "smollm2-135m", device=device)
            found = f"{editor.method.display} (untrained, {methods.get(args.method).config_path.name})"
        else:
            editor = load_editor(args.editor or args.run, model=args.model, device=device,
                                 tracking_uri=args.tracking_uri, instruction_seed=args.instruction_seed)
            found = editor.resolved.line()
        editor.prepare(requests)  # every request checked (task, slots) before any edit
    except (CheckpointMismatch, RequestError, FileNotFoundError, ConfigError) as e:
        return _fail(str(e))
    except ValueError as e:  # not an editor checkpoint, unknown model, ...
        return _fail(str(e))

    print(f"{found}; base model {editor.model_name}; {len(requests)} request(s)", file=sys.stderr)
    result = editor.edit(requests, max_new_tokens=args.max_new_tokens, top_k=args.top_k if args.compare else 0,
                         locality=locality)
    try:
        if args.json:
            rows = [i.to_dict() for i in result]
            print(json.dumps({"edits": rows, "locality": [p.to_dict() for p in result.locality]} if locality
                             else rows, indent=2, ensure_ascii=False))
        else:
            print(render(result, args.compare))
        if args.save:
            out = result.save(args.save)
            print(f"saved the edited model to {out} (MODEL_CARD.md, edits.json)", file=sys.stderr)
    except (OSError, RuntimeError, FileExistsError) as e:
        return _fail(f"saving failed, nothing saved: {e}")
    finally:
        result.revert()
    return 0

"""Seconds per edit through the edit API: `load_editor(...).edit(request)`, after the model is loaded.

Loads an editor once (`--editor` a checkpoint, run folder or MLflow run id; else an untrained
InstructEdit editor of `--config`'s editor section on `--model`: speed does not depend on training),
then times `--edits` single edits of real ZsRE test records (the data pipeline, `--split`) after
`--warmup` edits, each reverted before the next, so every edit starts from the unedited model.
Reports the median and p90 seconds of `editor.edit(request)` with its defaults (what a user calls),
and for one scenario more: `--compare-edits` edits the way `instructedit edit --compare` runs them
(greedy continuations of 20 tokens, top-5 next tokens, the built-in locality facts before and after).

The phase breakdown times one edit's parts by wrapping the API's own methods and functions with
perf_counter (exclusive times: a phase nested in another counts once, in the inner one); what no
wrapper covers is "python". A torch.profiler table of the top operators over the same edits is
added. The load average is recorded with every timing: on a shared machine the figures are only
comparable within one run.

  python benchmarks/edit_api.py --model smollm2-135m --edits 20 --compare-edits 2 --out docs/results/bench_edit_api.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict

TARGET_S_PER_EDIT = 0.15


class PhaseTimer:
    """Exclusive wall time per label of the wrapped callables (a nested call's time is its own
    label's, not its caller's). `inside` relabels a call made from within another label."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [label, child seconds] per open call
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner, attr: str, label: str, inside: dict[str, str] | None = None) -> None:
        if not hasattr(owner, attr):
            return
        orig = getattr(owner, attr)
        # An instance's method is shadowed by an instance attribute (undone by deleting it).
        shadow = not isinstance(owner, (type, types.ModuleType)) and attr not in vars(owner)

        def timed(*a, **k):
            name = (inside or {}).get(self._stack[-1][0], label) if self._stack else label
            self._stack.append([name, 0.0])
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                _, child = self._stack.pop()
                self.totals[name] += dt - child
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][1] += dt

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, None if shadow else orig))

    def unwrap(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            if orig is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, orig)
        self._undo.clear()


def wrap_phases(timer: PhaseTimer, editor) -> None:
    """The API's parts, by what they do. A name this version of the API lacks is skipped, so the
    same script times the API before and after a change."""
    from instructedit import api
    from instructedit.data import batches

    ed = editor.editable
    edit_fwd = "edit: upper blocks + LM head forward (capture)"
    for owner, attr, label in (
        (editor, "prepare", "resolve requests (validate, instruction, template)"),
        (api, "encode_pairs", "tokenise"),
        (batches, "encode_pairs", "tokenise"),
        (api, "edit_batch", "tokenise"),
        # the API before the packed probes: whole-model forwards per probe batch
        (editor, "target_probs", "probes: P(target), whole-model forwards"),
        # after: one lower pass for the edit rows and the probes, packed upper passes, the LM head
        # at the answer positions (api.BoundEditor._lower / editor/packed.py / _score)
        (editor, "_lower", "lower blocks (edit rows + probes, shared instruction prefix)"),
        (api, "upper_packed", "probes: upper blocks (pre + post, packed)"),
        (editor, "_score", "probes: LM head at answer positions, log-softmax, top-k"),
        (editor, "continuation", "probes: greedy continuations"),
        (editor, "next_tokens", "probes: top-k next tokens (whole-model forward)"),
        (ed, "lower", "lower blocks (edit rows)"),
        (ed, "edit_gradients", "edit: backward to the edited layers (u, d)"),
        (ed, "transform", "edit: gradient transform"),
        (ed, "apply", "apply edits to the weights"),
    ):
        timer.wrap(owner, attr, label)
    timer.wrap(ed, "answer_nll", "upper blocks + LM head: pre-edit loss",
               inside={"edit: backward to the edited layers (u, d)": edit_fwd})


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def build_editor(args, loaded):
    """The editor under test: a checkpoint, or an untrained InstructEdit editor saved and loaded
    through load_editor (the same path a trained one takes)."""
    import torch
    from instructedit.api import load_editor
    from instructedit.config import load_run_config, to_dict
    from instructedit.editor.mend import MendEditor

    if args.editor:
        return load_editor(args.editor, model=loaded, device=args.device), args.editor
    cfg = load_run_config(args.config, {"model": args.model, "mode": "instructedit"})
    torch.manual_seed(0)
    fresh = MendEditor(loaded, cfg.editor)
    with tempfile.TemporaryDirectory() as tmp:
        path = fresh.save(os.path.join(tmp, "editor.pt"), extra={"method": "instructedit", "step": 0,
                                                                 "run_config": to_dict(cfg)})
        editor = load_editor(path, model=loaded, device=args.device)
    return editor, f"untrained InstructEdit editor (editor section of --config {args.config}: rank {cfg.editor.rank})"


def zsre_requests(args, n: int):
    from instructedit.api import EditRequest
    from instructedit.config import DataConfig, RunConfig
    from instructedit.data.pipeline import load_records

    cfg = RunConfig(data=DataConfig(tasks=("zsre",), hold_out=(), max_records=n, on_error="skip"))
    records = load_records(cfg, args.split, ["zsre"])[:n]
    if len(records) < n:
        raise SystemExit(f"only {len(records)} ZsRE {args.split} records, asked for {n}")
    return [EditRequest(prompt=r.prompt, target=r.target_new, subject=r.subject,
                        rephrases=list(r.rephrase_prompts), task="zsre",
                        locality=[{"prompt": p.prompt, "answer": (p.answer or [""])[0]} for p in r.locality])
            for r in records]


def time_edits(editor, requests, kwargs_of, warmup: int) -> tuple[list[float], list[float], float, float]:
    """Seconds of edit() per request (after `warmup` untimed ones) and of the revert after it."""
    for r in requests[:warmup]:
        editor.edit(r, **kwargs_of(r)).revert()
    edit_s, revert_s = [], []
    load0 = os.getloadavg()[0]
    for r in requests[warmup:]:
        kw = kwargs_of(r)
        t0 = time.perf_counter()
        result = editor.edit(r, **kw)
        edit_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result.revert()
        revert_s.append(time.perf_counter() - t0)
    return edit_s, revert_s, load0, os.getloadavg()[0]


def breakdown(editor, requests, kwargs_of) -> dict:
    """Mean exclusive seconds per phase over `requests` (one edit each)."""
    timer = PhaseTimer()
    wrap_phases(timer, editor)
    total = 0.0
    try:
        for r in requests:
            kw = kwargs_of(r)
            t0 = time.perf_counter()
            result = editor.edit(r, **kw)
            total += time.perf_counter() - t0
            result.revert()
    finally:
        timer.unwrap()
    n = len(requests)
    phases = {k: v / n for k, v in sorted(timer.totals.items(), key=lambda kv: -kv[1])}
    phases["python (everything else in edit())"] = max(0.0, total / n - sum(phases.values()))
    return {"edits": n, "s_per_edit": total / n, "phases_s": phases,
            "calls_per_edit": {k: v / n for k, v in timer.calls.items()}}


def profile_ops(editor, requests, kwargs_of, top: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for r in requests:
            editor.edit(r, **kwargs_of(r)).revert()
    n = len(requests)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return [{"op": e.key, "self_s_per_edit": e.self_cpu_time_total / 1e6 / n, "calls_per_edit": e.count / n}
            for e in rows]


def summary(edit_s, revert_s, load0, load1) -> dict:
    return {"edits": len(edit_s), "median_s_per_edit": statistics.median(edit_s),
            "p90_s_per_edit": quantile(edit_s, 0.9), "min_s_per_edit": min(edit_s), "max_s_per_edit": max(edit_s),
            "median_revert_s": statistics.median(revert_s), "load_avg_1m_before": load0, "load_avg_1m_after": load1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--editor", help="an editor checkpoint (editor.pt, step or run folder, MLflow run id); "
                    "unset: an untrained InstructEdit editor on --model")
    ap.add_argument("--config", default="demo", help="run config whose editor section builds the untrained editor")
    ap.add_argument("--edits", type=int, default=20, help="timed single edits (default scenario)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compare-edits", type=int, default=3,
                    help="timed edits as `instructedit edit --compare` runs them (0 = skip)")
    ap.add_argument("--profile-edits", type=int, default=5, help="edits under the phase timer and torch.profiler")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from instructedit.api import locality_facts
    from instructedit.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda *a: print(*a, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    loaded = build_model(args.model, device=args.device)
    editor, editor_label = build_editor(args, loaded)
    load_s = time.perf_counter() - t0
    n_needed = args.warmup + max(args.edits, args.profile_edits, args.compare_edits)
    requests = zsre_requests(args, n_needed)
    say(f"[bench] {editor_label} on {args.model}: loaded in {load_s:.1f}s; {len(requests)} ZsRE requests")

    default_kw = lambda r: {}
    facts = locality_facts()
    compare_kw = lambda r: {"max_new_tokens": 20, "top_k": 5, "locality": facts}

    edit_s, revert_s, l0, l1 = time_edits(editor, requests[: args.warmup + args.edits], default_kw, args.warmup)
    default = summary(edit_s, revert_s, l0, l1)
    say(f"[bench] edit(request): median {default['median_s_per_edit']:.3f} s, p90 {default['p90_s_per_edit']:.3f} s "
        f"(load {l0:.2f} -> {l1:.2f})")
    prof_reqs = requests[args.warmup: args.warmup + args.profile_edits]
    load_b = os.getloadavg()[0]
    default["breakdown"] = breakdown(editor, prof_reqs, default_kw)
    default["breakdown"]["load_avg_1m"] = load_b
    default["top_ops"] = profile_ops(editor, prof_reqs, default_kw, 12)
    for k, v in default["breakdown"]["phases_s"].items():
        say(f"[bench]   {v * 1000:7.1f} ms  {k}")

    compare = None
    if args.compare_edits:
        reqs = requests[: args.warmup + args.compare_edits]
        edit_s, revert_s, l0, l1 = time_edits(editor, reqs, compare_kw, min(1, args.warmup))
        compare = summary(edit_s, revert_s, l0, l1)
        compare["options"] = {"max_new_tokens": 20, "top_k": 5, "locality": f"{len(facts)} built-in facts",
                              "locality_tokens": 8}
        load_b = os.getloadavg()[0]
        compare["breakdown"] = breakdown(editor, requests[args.warmup: args.warmup + args.compare_edits], compare_kw)
        compare["breakdown"]["load_avg_1m"] = load_b
        say(f"[bench] edit(request, --compare options): median {compare['median_s_per_edit']:.3f} s "
            f"(load {l0:.2f} -> {l1:.2f})")

    split = editor.editable.split
    prefix_cache = ({"hits": split.shared_hits, "misses": split.shared_misses}
                    if hasattr(split, "shared_hits") else None)  # SplitModel's shared-prefix cache
    median = default["median_s_per_edit"]
    out = {"benchmark": "edit_api", "model": args.model, "editor": editor_label, "device": args.device,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
           "load_s": load_s, "split": args.split, "task": "zsre", "warmup": args.warmup,
           "edit": default, "compare": compare, "prefix_cache": prefix_cache,
           "target_s_per_edit": TARGET_S_PER_EDIT, "meets_target": median <= TARGET_S_PER_EDIT}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, args.out)
    print(json.dumps({"median_s_per_edit": round(median, 4), "p90_s_per_edit": round(default["p90_s_per_edit"], 4),
                      "meets_target": out["meets_target"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

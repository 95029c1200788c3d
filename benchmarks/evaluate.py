"""Evaluation speed per task: the batched runner vs the one-record-at-a-time reference.

Same editor (freshly initialised: speed does not depend on training), same records, one process.
Per task:
  batched:   core.evaluate_batch over batches of independent edits, the full metric set (plain and
             instructed probes, ConvSent ES/DD, generation-based metrics): seconds per record and
             the peak RSS while it runs (sampled every 20 ms)
  reference: reference.reference_evaluate on the first --check records (dense apply, whole-model
             forwards and generations, revert); the JSON reports the largest metric difference
The load average is recorded with the timings: on a shared machine they are only comparable
within one run. Each task also reports the batched run's time by phase (lower blocks with the
tokens sent through them, upper blocks, LM head, greedy generation; wall time of the wrapped
calls, so phases nested in generation are counted there) and whether the targets are met.

  python benchmarks/evaluate.py --model smollm2-135m --records 16 --out docs/results/bench_evaluate.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time


class Phases:
    """Wall time of the evaluation's phases, by wrapping SplitModel.lower/upper/logits and
    generation.greedy while the block runs; SplitModel._lower (and _continue) count the tokens they
    compute (real tokens, not padding nor a cached prefix), by the phase that ran them."""

    def __enter__(self):
        from instructedit.editor.split import SplitModel
        from instructedit.evaluate import generation

        self.seconds: dict[str, float] = {"lower": 0.0, "upper": 0.0, "head": 0.0, "generation": 0.0}
        self.lower_tokens: dict[str, int] = {}  # by the phase that ran them (lower: scoring passes)
        self._saved = []
        wrapped = [(SplitModel, "lower", "lower"), (SplitModel, "upper", "upper"), (SplitModel, "logits", "head"),
                   (generation, "greedy", "generation")]
        wrapped += [(generation, name, "generation") for name in ("greedy_split", "unchanged_split")
                    if hasattr(generation, name)]
        for owner, name, key in wrapped:
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self._timed(getattr(owner, name), key))
        self._saved.append((SplitModel, "_lower", SplitModel._lower))
        SplitModel._lower = self._counted(SplitModel._lower)
        if hasattr(SplitModel, "_continue"):  # rows continuing a shared prefix: only their own tokens run
            self._saved.append((SplitModel, "_continue", SplitModel._continue))
            SplitModel._continue = self._counted_rows(SplitModel._continue)
        return self

    def _timed(self, fn, key):
        def timed(*a, **k):
            t = time.perf_counter()
            depth = self._depth = getattr(self, "_depth", 0) + 1
            if depth == 1:
                self._outer = key
            try:
                return fn(*a, **k)
            finally:
                self._depth -= 1
                if depth == 1:  # outermost wrapped call only: nested phases count once
                    self.seconds[key] += time.perf_counter() - t
        return timed

    def _count(self, n: int) -> None:
        phase = getattr(self, "_outer", "lower") if getattr(self, "_depth", 0) else "lower"
        self.lower_tokens[phase] = self.lower_tokens.get(phase, 0) + n

    def _counted(self, fn):
        def counted(split, input_ids, attention_mask, *a, **k):
            self._count(int(attention_mask[:, -input_ids.shape[1]:].sum()))
            return fn(split, input_ids, attention_mask, *a, **k)
        return counted

    def _counted_rows(self, fn):
        def counted(split, rows, heads, cut, *a, **k):
            self._count(sum(len(r) - c for r, c in zip(rows, cut)))
            return fn(split, rows, heads, cut, *a, **k)
        return counted

    def __exit__(self, *exc):
        for owner, name, fn in self._saved:
            setattr(owner, name, fn)


class PeakRSS:
    """Peak resident memory of this process while the block runs (psutil, sampled)."""

    def __enter__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


TARGETS = {"zsre": 0.2, "counterfact": 0.25, "convsent": 1.0}  # s/record, issue 15
CONVSENT_PEAK_MB = 2560


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default="zsre,counterfact,recent,convsent")
    ap.add_argument("--records", type=int, default=16, help="records per task")
    ap.add_argument("--check", type=int, default=2, help="records per task also run through the reference")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--instructions", default="seen")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--unshared", action="store_true",
                    help="also time the batched path without shared prefixes (evaluate_batch(share_prefixes=False): "
                         "every row whole through the lower blocks, whole-model generation) on the same records")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from instructedit.config import DataConfig, EditorConfig, RunConfig
    from instructedit.data.pipeline import load_records
    from instructedit.editor.mend import MendEditor
    from instructedit.evaluate.core import EvalOptions, evaluate_batch, mend_edits
    from instructedit.evaluate.reference import reference_evaluate
    from instructedit.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(0)
    editor = MendEditor(build_model(args.model, device=device), EditorConfig()).to(device).eval()
    make = mend_edits(editor)
    opts = EvalOptions(instructed_edit=True)
    say = lambda *a: print(*a, file=sys.stderr, flush=True)
    evaluate_batch(editor, load_records(RunConfig(data=DataConfig(tasks=("zsre",), hold_out=(), max_records=2,
                                                                   on_error="skip")), args.split, ["zsre"]),
                   make, args.max_length, opts)  # warm-up (allocator, lazy init)
    results = {}
    for task in [t for t in args.tasks.split(",") if t]:
        cfg = RunConfig(data=DataConfig(tasks=(task,), hold_out=(), instruction_setting=args.instructions,
                                        max_records=args.records, on_error="skip"))
        records = load_records(cfg, args.split, [task])[: args.records]
        if hasattr(editor.split, "clear_shared"):  # each task starts with no shared prefix cached
            editor.split.clear_shared()
        load0 = os.getloadavg()[0]
        with PeakRSS() as mem, Phases() as phases:
            t0 = time.perf_counter()
            rows = []
            for i in range(0, len(records), args.batch_size):
                rows += evaluate_batch(editor, records[i: i + args.batch_size], make, args.max_length, opts)
            t_batched = time.perf_counter() - t0
        if args.unshared:
            load_u = os.getloadavg()[0]
            t0 = time.perf_counter()
            unshared = []
            for i in range(0, len(records), args.batch_size):
                unshared += evaluate_batch(editor, records[i: i + args.batch_size], make, args.max_length, opts,
                                           share_prefixes=False)
            t_unshared = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = [reference_evaluate(editor, r, make, args.max_length, opts) for r in records[: args.check]]
        t_ref = time.perf_counter() - t0
        diff = 0.0
        for b, n in zip(rows, ref):
            for k, v in n.items():
                if isinstance(v, float):
                    diff = max(diff, abs(b[k] - v)) if k in b else float("inf")
        results[task] = {"records": len(records), "batched_s": t_batched, "s_per_record": t_batched / len(records),
                         "reference_s_per_record": t_ref / max(1, len(ref)), "reference_checked": len(ref),
                         "max_abs_metric_diff_vs_reference": diff, "peak_rss_mb": mem.peak / 2**20,
                         "load_avg_1m_before": load0, "load_avg_1m_after": os.getloadavg()[0],
                         "phases_s": {k: round(v, 3) for k, v in phases.seconds.items()},
                         "lower_tokens": phases.lower_tokens}
        if args.unshared:
            results[task]["unshared_s_per_record"] = t_unshared / len(records)
            results[task]["unshared_load_avg_1m_before"] = load_u
            results[task]["max_abs_metric_diff_vs_unshared"] = max(
                (abs(b[k] - u[k]) for b, u in zip(rows, unshared) for k in u if isinstance(u[k], float)), default=0.0)
        target = TARGETS.get(task)
        if target is not None:
            results[task]["target_s_per_record"] = target
            results[task]["meets_target"] = results[task]["s_per_record"] <= target and (
                task != "convsent" or results[task]["peak_rss_mb"] <= CONVSENT_PEAK_MB)
        say(f"[bench] {task}: {results[task]['s_per_record']:.2f} s/record, peak {mem.peak / 2**20:.0f} MB, "
            f"reference diff {diff:.2g} (load {load0:.2f}); phases {results[task]['phases_s']}, "
            f"{phases.lower_tokens} lower-block tokens")
    out = {"benchmark": "evaluate", "model": args.model, "device": device, "torch_threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "batch_size": args.batch_size, "max_length": args.max_length,
           "instruction_setting": args.instructions, "options": dataclasses.asdict(opts),
           "targets_s_per_record": TARGETS, "target_convsent_peak_mb": CONVSENT_PEAK_MB,
           "max_abs_metric_diff_vs_reference": max((r["max_abs_metric_diff_vs_reference"] for r in results.values()),
                                                   default=0.0),
           "tasks": results}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, args.out)
    print(json.dumps({t: round(r["s_per_record"], 3) for t, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

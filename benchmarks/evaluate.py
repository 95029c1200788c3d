"""Evaluation throughput: the batched runner vs a one-record-at-a-time loop.

Same editor (freshly initialised: speed does not depend on training), same records, one process.
  batched: core.evaluate_batch over batches of independent edits (the runner's path: one edit
           forward+backward per batch, one forward per probe kind, lower blocks run once per batch)
  naive:   per record: compute its edit, apply it densely to the model, plain full forwards per
           probe kind (pre-edit locality included), revert (runner.reference_evaluate)
Both compute the full metric set (reliability, generalization, locality, portability per kind,
ES, DD); the JSON also reports how far their numbers differ.

  python benchmarks/evaluate.py --model smollm2-135m --records 32 --out bench-eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as std_platform
import resource
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default="counterfact,recent,convsent,zsre")
    ap.add_argument("--records", type=int, default=32, help="records in all (split evenly over the tasks)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--instructions", default="seen")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from instructedit.config import DataConfig, EditorConfig, RunConfig
    from instructedit.data.pipeline import load_records
    from instructedit.editor.editor import MendEditor
    from instructedit.evaluate import runner
    from instructedit.evaluate.core import evaluate_batch, mend_edits
    from instructedit.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tasks = [t for t in args.tasks.split(",") if t]
    per_task = -(-args.records // len(tasks))
    cfg = RunConfig(data=DataConfig(tasks=tuple(tasks), hold_out=(), instruction_setting=args.instructions,
                                    max_records=per_task, on_error="skip"))
    records = load_records(cfg, args.split, tasks)[: args.records]
    torch.manual_seed(0)
    editor = MendEditor(build_model(args.model, device=device), EditorConfig()).to(device).eval()
    make = mend_edits(editor)
    say = lambda *a: print(*a, file=sys.stderr, flush=True)
    say(f"[bench] {len(records)} records ({', '.join(tasks)}), {args.model} on {device}, "
        f"{torch.get_num_threads()} threads")

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # Warm-up both paths on one record (allocator, lazy init).
    evaluate_batch(editor, records[:2], make, args.max_length)
    runner.reference_evaluate(editor, records[0], make, args.max_length)

    sync()
    t0 = time.perf_counter()
    batched = []
    for i in range(0, len(records), args.batch_size):
        batched += evaluate_batch(editor, records[i : i + args.batch_size], make, args.max_length)
    sync()
    t_batched = time.perf_counter() - t0
    say(f"[bench] batched: {t_batched:.2f}s")

    t0 = time.perf_counter()
    naive = [runner.reference_evaluate(editor, r, make, args.max_length) for r in records]
    sync()
    t_naive = time.perf_counter() - t0
    say(f"[bench] naive: {t_naive:.2f}s")

    diffs = {}
    for b, n in zip(batched, naive):
        for k, v in n.items():
            if isinstance(v, float) and isinstance(b.get(k), float):
                diffs[k] = max(diffs.get(k, 0.0), abs(b[k] - v))
    n = len(records)
    out = {
        "benchmark": "evaluate",
        "model": args.model,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": std_platform.processor() or std_platform.machine(),
        "records": n,
        "tasks": tasks,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "instruction_setting": args.instructions,
        "batched_s": t_batched,
        "naive_s": t_naive,
        "batched_records_per_s": n / t_batched,
        "naive_records_per_s": n / t_naive,
        "speedup": t_naive / t_batched,
        "target_speedup": 10.0,
        "meets_target": t_naive / t_batched >= 10.0,
        "max_abs_metric_diff": diffs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("records", "batched_records_per_s", "naive_records_per_s", "speedup")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

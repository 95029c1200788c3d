"""GPU check: the editor training step and batched evaluation on a LLaMA-2-7B-shaped model.

The model has random weights (no download): the llama-2-7b registry entry (layout, edited MEND
layers, dtype) with the 7B dimensions below, built directly on the device in its dtype, so building
takes seconds. It is wrapped exactly as training wraps it (train.loop.build_editor: MEND on the
YAML's top MLP blocks, the base model frozen) and measured on B synthetic edit records of realistic
length:
  train: one loop step as train/loop.py runs it (zero_grad, training_step under bf16 autocast on
         CUDA as trainer.py, backward, clip, Adam): median seconds over --repeats after warm-up,
         edits/s, peak memory (torch.cuda.max_memory_allocated on CUDA, else the process' peak RSS)
  eval:  evaluate.core.evaluate_batch (the batched path of `instructedit evaluate` and validation,
         the full metric set) over --eval-records records: seconds per record, peak memory
Without CUDA the same code runs on the registry's tiny-llama in fp32 on CPU (seconds; `make test`).
Needs torch, transformers, pyyaml and pyarrow (data/record.py); never ray or mlflow.

    python benchmarks/gpu_check.py --out docs/results/bench_gpu_check.json            # 7b on CUDA
    python benchmarks/gpu_check.py --shape tiny --out docs/results/bench_gpu_check_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import random
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path

# A checkout without `pip install -e .` (a bare GPU machine): the package is platform/instructedit.
if importlib.util.find_spec("instructedit") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import torch

# LLaMA-2-7B's dimensions (its Hugging Face config.json). The registry entry llama-2-7b is an `hf`
# source and carries no dimensions; everything else (block paths, edited layers and weights,
# dtype) is read from it.
LLAMA2_7B_DIMS = {
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "seed": 0,
}
GOAL_TRAIN_PEAK_GB = 24
WORDS = ("river", "stone", "quiet", "market", "garden", "silver", "winter", "castle", "forest", "signal",
         "harbor", "lantern", "north", "engine", "violet", "copper", "meadow", "island", "temple", "canyon",
         "paper", "velvet", "summit", "orchard", "thunder")


def model_config(shape: str):
    """The registry's ModelConfig for `shape`: tiny-llama as it is, or llama-2-7b as random weights."""
    from instructedit.config import load_model_config, replace

    if shape == "tiny":
        return load_model_config("tiny-llama")
    cfg = load_model_config("llama-2-7b")
    return replace(cfg, name="llama-2-7b-random", source="tiny", tokenizer="byte", hf_id="",
                   tiny=dict(LLAMA2_7B_DIMS))


@contextlib.contextmanager
def built_on(device: torch.device, dtype: torch.dtype):
    """New tensors on `device` in `dtype`: the registry's from_config allocates and initialises
    the weights right there (a fast normal init on the GPU), never an fp32 copy on the host."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(prev)


# ------------------------------------------------------------------------------ synthetic records
def text_of(rng: random.Random, tokenizer, n_tokens: int, first: str = "") -> str:
    """Random words until the text is at least `n_tokens` tokens long (whatever the tokenizer)."""
    words = [first] if first else []
    while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < n_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def synthetic_records(n: int, tokenizer, seq_len: int, seed: int, tag: str) -> list:
    """CounterFact-shaped records, instruction-tagged through the task's template, with an edit
    input of about `seq_len` tokens (an instructed CounterFact edit input is ~50-70 LLaMA tokens):
    a rephrase, one locality probe and one portability probe each, 1-3 token answers."""
    from instructedit.data.instructions import task_config, with_instruction
    from instructedit.data.record import EditRecord, Probe

    task = task_config("counterfact")
    rng = random.Random(seed)
    overhead = len(tokenizer(task.template.replace("{task}", task.display_name or task.name)
                             .replace("{instruction}", "").replace("{prompt}", ""),
                             add_special_tokens=False)["input_ids"])
    prompt_len = max(4, seq_len // 4)
    instr_len = max(4, seq_len - overhead - prompt_len)
    out = []
    for i in range(n):
        subject = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
        answer = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2)))
        rec = EditRecord(
            task="counterfact", case_id=f"gpu-check-{tag}-{i}", subject=subject,
            prompt=text_of(rng, tokenizer, prompt_len, first=subject), target_new=answer(),
            ground_truth=[answer()],
            rephrase_prompts=[text_of(rng, tokenizer, prompt_len + 4, first=subject)],
            locality=[Probe("neighborhood", text_of(rng, tokenizer, 16), [answer()])],
            portability=[Probe("reasoning", text_of(rng, tokenizer, 20, first=subject), [answer()])],
        )
        out.append(with_instruction(rec, task, "synthetic", text_of(rng, tokenizer, instr_len)))
    return out


# ----------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def error_text(exc: BaseException) -> str:
    """One line: the error and the innermost frames of the package (file:line function)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "instructedit" in f.filename]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))
    return f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=("tiny", "7b"), default=None,
                    help="default: 7b when CUDA is available, else tiny")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--dtype", default="auto",
                    help="base model dtype; auto: the registry's (bfloat16 for 7b) on CUDA, float32 on CPU")
    ap.add_argument("--autocast", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast around the training step (default: on CUDA, as trainer.py)")
    ap.add_argument("--batch-size", type=int, default=None, help="edits per step (default: train.batch_size)")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens of each edit input (instruction + prompt)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-records", type=int, default=16)
    ap.add_argument("--eval-max-length", type=int, default=128, help="as `instructedit evaluate`")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import transformers
    from instructedit.config import load_run_config
    from instructedit.editor.mend import mend_edits
    from instructedit.evaluate.core import EvalOptions, evaluate_batch
    from instructedit.models import build_model
    from instructedit.train.loop import build_editor, make_optimizer
    from instructedit.train.step import make_step_batch, training_step

    cuda = torch.cuda.is_available()
    device = torch.device(("cuda" if cuda else "cpu") if args.device == "auto" else args.device)
    shape = args.shape or ("7b" if device.type == "cuda" else "tiny")
    mcfg = model_config(shape)
    dtype_name = args.dtype if args.dtype != "auto" else (mcfg.dtype if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    autocast = device.type == "cuda" if args.autocast is None else args.autocast
    cfg = load_run_config(None, {"model": "tiny-llama" if shape == "tiny" else "llama-2-7b"})
    B = args.batch_size or cfg.train.batch_size
    say = lambda *a: print("[gpu_check]", *a, file=sys.stderr, flush=True)
    errors: dict[str, str] = {}
    torch.manual_seed(0)

    t0 = time.perf_counter()
    with built_on(device, dtype):
        loaded = build_model(mcfg, device=device)  # frozen: eval(), requires_grad False
    # The hypernetwork (transforms, edit lrs, running statistics) stays fp32 while the base model is
    # bf16, as in training: Adam's lr 1e-6 steps on weights of ~1e-2 are below bf16's resolution
    # (8 mantissa bits) and would be lost, and the running moments are float64 by design. The
    # matmuls still run in bf16 under autocast. For 7B the two shared transforms (15104 wide,
    # rank 1920) are ~116M parameters: ~0.5 GB, ~1.9 GB with gradients and Adam's two moments.
    editor = build_editor(cfg, loaded, str(device))
    editor.train()
    sync(device)
    build_s = time.perf_counter() - t0
    say(f"built {mcfg.name} ({dtype_name}) on {device} in {build_s:.1f}s")
    base_params = sum(p.numel() for p in loaded.model.parameters())
    editor_params = sum(p.numel() for p in editor.parameters())
    trainable_base = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)

    records = synthetic_records(B, editor.tokenizer, args.seq_len, seed=0, tag="train")
    batch = make_step_batch(records, editor.tokenizer, cfg.train.max_length, seed=0,
                            n_sentences=cfg.train.sentiment_sentences,
                            outer=cfg.editor.rephrase_in_edit_loss).to(device)
    parts = [b for b in (batch.edit, batch.loc, batch.sentiment, batch.outer) if b is not None]
    tokens_per_step = sum(int(b.attention_mask.sum()) for b in parts)
    edit_lengths = batch.edit.attention_mask.sum(1).tolist()
    optimizer = make_optimizer(editor, cfg)
    last: dict = {}

    def step() -> None:  # one step of train/loop.py, without the data loading and logging
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, metrics = training_step(editor, batch, cfg.editor)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(editor.parameters(), cfg.editor.grad_clip)
        optimizer.step()
        last.update(metrics)

    step_times: list[float] = []
    train_peak = None
    reset_peak(device)
    try:
        step_times = timed(step, device, args.repeats, args.warmup)
        train_peak = peak_gpu_gb(device)
        say(f"train: {statistics.median(step_times):.3f} s/step for {B} edits, peak "
            f"{train_peak if train_peak is not None else peak_rss_gb():.2f} GB")
    except Exception as exc:  # noqa: BLE001 - a failure is a result of the check: it goes into the JSON
        errors["train"] = error_text(exc)
        say("train FAILED:", errors["train"])
    optimizer.zero_grad(set_to_none=True)
    optimizer.state.clear()  # evaluation holds no training state (Adam's moments freed)

    eval_records = synthetic_records(args.eval_records, editor.tokenizer, args.seq_len, seed=1, tag="eval")
    eval_bs = cfg.eval.batch_size
    editor.eval()
    make = mend_edits(editor)
    opts = EvalOptions()  # the full metric set: instructed probes and generation
    eval_s = eval_peak = None
    n_rows = 0
    try:
        evaluate_batch(editor, eval_records[:2], make, args.eval_max_length, opts)  # warm-up
        sync(device)
        reset_peak(device)
        t = time.perf_counter()
        for i in range(0, len(eval_records), eval_bs):
            n_rows += len(evaluate_batch(editor, eval_records[i: i + eval_bs], make, args.eval_max_length, opts))
        sync(device)
        eval_s = time.perf_counter() - t
        eval_peak = peak_gpu_gb(device)
        say(f"eval: {eval_s / len(eval_records):.3f} s/record")
    except Exception as exc:  # noqa: BLE001 - as for the training step
        errors["eval"] = error_text(exc)
        say("eval FAILED:", errors["eval"])

    step_s = statistics.median(step_times) if step_times else None
    dims = dict(mcfg.tiny)
    result = {
        "benchmark": "gpu_check",
        "shape": shape,
        "model": mcfg.name,
        "dims": {k: dims[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "intermediate_size", "vocab_size")},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "dtype": dtype_name,
        "editor_dtype": str(editor.edit_lrs.dtype).replace("torch.", ""),
        "train_autocast": "bfloat16" if autocast else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "base_params": base_params,
        "trainable_base_params": trainable_base,
        "editor_params": editor_params,
        "edited_weights": list(editor.names),
        "build_s": build_s,
        "batch": B,
        # tokens of each edit row (instructed edit input + target answer), the requested edit-input
        # length and training's cap of one sequence
        "seq_length": {"edit_input_target": args.seq_len, "edit_row_mean": sum(edit_lengths) / len(edit_lengths),
                       "edit_row_max": max(edit_lengths), "max_length": cfg.train.max_length},
        "tokens_per_step": tokens_per_step,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "step_s": step_s,
        "step_s_all": step_times,
        "edits_per_s": B / step_s if step_s else None,
        "last_step_metrics": {k: v for k, v in last.items() if isinstance(v, float) and math.isfinite(v)},
        "peak_gpu_mem_gb": train_peak,
        "eval_records": len(eval_records),
        "eval_rows": n_rows,
        "eval_batch_size": eval_bs,
        "eval_max_length": args.eval_max_length,
        "eval_s": eval_s,
        "eval_s_per_record": eval_s / len(eval_records) if eval_s is not None else None,
        "eval_peak_gpu_mem_gb": eval_peak,
        "peak_rss_gb": peak_rss_gb(),  # the whole process, build included
        "goal_train_peak_gb": GOAL_TRAIN_PEAK_GB,
        "meets_goal": (train_peak <= GOAL_TRAIN_PEAK_GB) if train_peak is not None and not errors else None,
        "errors": errors,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in ("shape", "device", "dtype", "step_s", "edits_per_s",
                                             "peak_gpu_mem_gb", "eval_s_per_record", "errors")}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu_check.py on the tiny shape on CPU: the same code path as the 7B check on a GPU,
in seconds, writing every field the GPU run reports."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, *extra) -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    rc = _gpu_check().main(["--shape", "tiny", "--device", "cpu", "--batch-size", "4", "--repeats", "2",
                            "--warmup", "1", "--eval-records", "4", "--out", str(out), *extra])
    return rc, json.loads(out.read_text())


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_cpu_run_reports_every_field(tmp_path):
    rc, r = _run(tmp_path)
    assert rc == 0 and r["errors"] == {}
    assert not list(tmp_path.glob("*.tmp"))  # written to a temp file, then replaced
    assert (r["shape"], r["device"], r["dtype"], r["editor_dtype"]) == ("tiny", "cpu", "float32", "float32")
    assert r["train_autocast"] is None and r["torch_version"] and r["device_name"].startswith("cpu")
    assert r["batch"] == 4 and r["dims"]["hidden_size"] == 64
    assert _positive(r["step_s"]) and len(r["step_s_all"]) == 2 and all(map(_positive, r["step_s_all"]))
    assert r["edits_per_s"] == pytest.approx(r["batch"] / r["step_s"])
    assert _positive(r["eval_s"]) and r["eval_rows"] == r["eval_records"] == 4
    assert r["eval_s_per_record"] == pytest.approx(r["eval_s"] / r["eval_records"])
    assert _positive(r["peak_rss_gb"]) and r["peak_gpu_mem_gb"] is None and r["eval_peak_gpu_mem_gb"] is None
    assert r["goal_train_peak_gb"] == 24 and r["meets_goal"] is None  # judged on a GPU only
    # MEND edits the registry's top MLP blocks; the base model has no trainable parameter
    assert r["trainable_base_params"] == 0 and r["editor_params"] > 0
    assert r["edited_weights"] == [f"model.layers.{i}.mlp.{w}_proj" for i in (2, 3) for w in ("gate", "up", "down")]
    assert 0 < r["seq_length"]["edit_row_mean"] <= r["seq_length"]["edit_row_max"] <= r["seq_length"]["max_length"]
    assert r["tokens_per_step"] > r["batch"] * r["seq_length"]["edit_input_target"] / 2


def test_the_check_pulls_in_neither_ray_nor_mlflow(tmp_path):
    # A fresh interpreter: other tests may already have imported ray or mlflow into this one.
    driver = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(SCRIPT)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "rc = mod.main(sys.argv[1:])\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'})\n"
        "print('FORBIDDEN', bad); sys.exit(rc or bool(bad))\n"
    )
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-c", driver, "--shape", "tiny", "--device", "cpu", "--batch-size", "2",
                           "--repeats", "1", "--warmup", "0", "--eval-records", "2", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert "FORBIDDEN []" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert proc.returncode == 0 and json.loads(out.read_text())["errors"] == {}


def test_bf16_base_model_runs_on_cpu(tmp_path):
    """llama-2-7b is bfloat16: the fp32 editor must train (under autocast, as trainer.py runs it)
    and evaluate on a bf16 base model."""
    rc, r = _run(tmp_path, "--dtype", "bfloat16", "--autocast")
    assert rc == 0 and r["errors"] == {}, r["errors"]

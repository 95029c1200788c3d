"""What a tracked run needs to be reproduced, as plain strings (torch-free: tracking and analysis use it).

tracking.run tags every new run with `git_commit` and `command`; train/run.py adds `model_source`
and `budget` (training edits = steps x global batch). The report's provenance block reads these.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

# The tags every training run carries (train/run.py run_tags) and a study trial adds
# (studies/trial.py): analysis labels rows by them (`method` is the display name), so a study's
# bundle, whose label becomes a tag of its own name, must not take one of these names.
RUN_TAG_KEYS = ("kind", "mode", "method", "tasks", "dataset_hash", "instruction_setting", "seed", "model",
                "model_source")
TRIAL_TAG_KEYS = ("study", "trial_id", "trial_name")


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it: `instructedit train ...`, `python -m instructedit.demo ...`."""
    argv = list(sys.argv if argv is None else argv) or [""]
    prog = Path(argv[0])
    if prog.suffix == ".py" and prog.parent.name == "instructedit":
        head = ["python", "-m", "instructedit" if prog.stem == "__main__" else f"instructedit.{prog.stem}"]
    else:
        head = [prog.name or "python"]
    return shlex.join(head + [str(a) for a in argv[1:]])


def model_source(name: str) -> str:
    """Where a registered base model's weights come from, and the YAML that says so; an unknown name
    is returned as it is (a path or hub id given directly)."""
    from .config import CONFIG_DIR, load_model_config

    yaml_path = CONFIG_DIR / "models" / f"{name}.yaml"
    if not name or not yaml_path.exists():
        return name
    mc = load_model_config(name)
    if mc.source == "gguf_package":
        where = f"{mc.package}/{mc.gguf_file}"
        try:
            import importlib.util

            spec = importlib.util.find_spec(mc.package)
            if spec is not None and spec.origin:
                where = str(Path(spec.origin).parent / mc.gguf_file)
        except (ImportError, ValueError):  # package not installed here: keep the symbolic name
            pass
    elif mc.source == "hf":
        where = f"hf:{mc.hf_id}"
    elif mc.source == "tiny":
        where = f"random weights, seed {mc.tiny.get('seed', 0)}"
    else:
        where = mc.source
    return f"{where} (configs/models/{name}.yaml)"


def budget(steps: int | None, batch_size: int | None) -> int | None:
    """Training edits seen: optimizer steps x global batch (the budget methods are compared at)."""
    if steps is None or batch_size is None:
        return None
    return int(steps) * int(batch_size)

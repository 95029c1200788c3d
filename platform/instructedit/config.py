"""Typed, frozen configuration.

A run is one YAML file (configs/runs/*.yaml) that names tasks and a model by their registry names
and sets the editor, training and evaluation sections. Tasks and models live in their own YAML
files (configs/tasks, configs/models) so that no code branches on a task or model name.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
INSTRUCTION_SETTINGS = ("none", "seen", "unseen")  # or "id:<instruction id>"
MODES = ("single-task", "multi-task", "instructedit")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and the key."""


# ----------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Instruction:
    id: str
    text: str
    unseen: bool = False  # kept out of training to test unseen instructions


@dataclass(frozen=True)
class SourceConfig:
    path: str  # relative to the data dir
    reader: str  # knowedit | mend | zsre_mend | convsent
    role: str = "all"  # all | train | val | test: which split the file feeds ("all" = split by hash)


@dataclass(frozen=True)
class TaskConfig:
    # No loss or metric list here: the training loss follows each record's data (sentiment records
    # get unlikelihood) and the metrics its probes.
    name: str
    description: str  # what the task asks of the editor; the instruction writer starts from it
    sources: tuple[SourceConfig, ...]
    instructions: tuple[Instruction, ...]
    template: str = "Task: {task}\nDescription: {instruction}\nInput: {prompt}"
    display_name: str = ""  # the {task} slot of the template
    balance_to: int | None = None  # down/up-sample the task to N records (ConvSent: 1427)
    hold_out: bool = False  # never trained on (ZsRE)
    # Position in every task list (tables, figures, comparisons, `prepare` without --config): the
    # paper's order. Training tasks come by `order`, hold-out tasks after all of them; a task without
    # one follows the ordered tasks of its group, alphabetically (order_tasks).
    order: int | None = None

    def instruction(self, instruction_id: str) -> Instruction:
        for ins in self.instructions:
            if ins.id == instruction_id:
                return ins
        raise ConfigError(f"task {self.name!r}: unknown instruction id {instruction_id!r}")

    @property
    def seen_pool(self) -> tuple[Instruction, ...]:
        return tuple(i for i in self.instructions if not i.unseen)

    @property
    def unseen_pool(self) -> tuple[Instruction, ...]:
        return tuple(i for i in self.instructions if i.unseen)


# ---------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # gguf_package | tiny | hf
    # where the weights come from
    hf_id: str = ""  # source=hf (and the tokenizer of tiny models when given)
    package: str = ""  # source=gguf_package: the Python package that ships the file
    gguf_file: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)  # source=tiny: a transformers config dict
    tokenizer: str = "auto"  # auto | byte (tiny models: a small deterministic tokenizer)
    # the module paths the editor needs (no name sniffing in code)
    backbone: str = "model"  # module that takes inputs_embeds and returns last_hidden_state
    blocks: str = "model.layers"  # the ModuleList of decoder blocks
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    position_embedding: str = ""  # GPT-2 adds learned positions to inputs_embeds
    edited_weights: tuple[str, ...] = ()  # module names; "{i}" is expanded over edited_layers
    edited_layers: tuple[int, ...] = (-3, -2, -1)  # negative = from the top
    dtype: str = "float32"
    # locate-then-edit methods (ROME, MEMIT, AlphaEdit): the MLP output projection they rewrite
    # ("{i}" = block) and the blocks where: ROME one layer, MEMIT and AlphaEdit several
    mlp_out: str = ""
    rome_layer: int | None = None
    memit_layers: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------- editor
@dataclass(frozen=True)
class EditorConfig:
    rank: int = 1920  # low-rank hidden width of the transform, capped at its input dim
    n_hidden: int = 1
    norm: bool = True  # normalise (u, d) by running statistics
    shared: bool = True  # one net per weight shape, with per-weight scale/shift
    edit_lr: float = 1e-4  # initial per-weight edit learning rate
    lr: float = 1e-6  # meta learning rate of the transform
    lr_lr: float = 1e-4  # learning rate of the edit learning rates
    c_edit: float = 0.1
    c_loc: float = 1.0
    grad_clip: float = 100.0
    # the edit loss (meta-objective) also on the record's plain prompt and one rephrase per edit
    # (MEND's edit_outer): rewards edits that hold on the questions users ask, not only the edit input
    rephrase_in_edit_loss: bool = False
    edited_layers: tuple[int, ...] = ()  # () = the model YAML's edited_layers (negative = from the top)
    # How (u, d) are standardised and which tokens form the edit. The defaults are MEND's; editor
    # checkpoints written before these fields existed load with the legacy values (editor/mend.py
    # LEGACY_EDITOR_FIELDS), so they edit exactly as they were trained.
    norm_eps: float = 1e-7  # added to the running std (MEND's value); legacy: 1e-5 added to the variance
    norm_eps_on: str = "std"  # std: (x - mean) / (std + eps) | var (legacy): (x - mean) / sqrt(var + eps)
    # gradient: tokens whose u and d are both non-zero (MEND's mask: drops each row's last token
    # and padding, whose output gradient is exactly zero) | attention (legacy): every attended token
    token_select: str = "gradient"
    loc_positions: str = "all"  # locality KL over: all (every token of the locality sequence, MEND) | answer
    # Which tokens of an edit row make the edit and feed the running statistics: all (every
    # selected token) | input (not the instruction prefix: the instruction steers the transform
    # through the context of the prompt's tokens without being part of the edit's key)
    edit_tokens: str = "all"

    def __post_init__(self):
        for name, allowed in (("norm_eps_on", ("std", "var")), ("token_select", ("gradient", "attention")),
                              ("loc_positions", ("all", "answer")), ("edit_tokens", ("all", "input"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"editor.{name} must be one of {'|'.join(allowed)}, got {getattr(self, name)!r}")
        if not self.norm_eps > 0:
            raise ConfigError(f"editor.norm_eps must be > 0, got {self.norm_eps!r}")


# ------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataConfig:
    tasks: tuple[str, ...] = ("counterfact", "recent", "convsent")
    hold_out: tuple[str, ...] = ("zsre",)
    data_dir: str = ""  # "" = $INSTRUCTEDIT_DATA or ../shared/data
    prepared_dir: str = ""  # parquet written by `instructedit prepare`; "" = prepare on the fly
    instruction_setting: str = "seen"  # none | seen | unseen | id:<instruction id>
    instruction_set: str = ""  # a named optimised instruction set ("" = the task YAML pools)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    max_records: int | None = None  # per task and split, for quick runs
    on_error: str = "raise"  # raise | skip
    # per-task override of the task YAML's balance_to: {convsent: null} = no balancing (full),
    # {convsent: 1153} = down-sample its train split to 1153 records
    balance: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # global, whatever the number of workers
    max_steps: int = 1000
    time_budget_s: float | None = None  # stop after this many seconds of training
    log_every: int = 10
    val_every: int = 100
    val_size: int = 64  # val records per task
    early_stop_metric: str = "val/score"  # higher is better; score = mean(edit_success, locality)
    early_stop_patience: int = 5  # validations without improvement
    seed: int = 0
    num_workers: int = 1
    use_gpu: str = "auto"  # auto | true | false
    max_failures: int = 2
    keep_checkpoints: int = 2
    storage_path: str = ""  # "" = ./runs
    max_length: int = 96  # token cap of one sequence
    # A cache of frozen lower-layer hidden states per sequence (MB; 0 = off). Off by default: it only
    # pays from the second epoch, and until full it grows the worker's memory by ~1 GB per epoch
    # of SmolLM2 rows (benchmarks/train_memory.py); turn it on for many-epoch runs with RAM to spare.
    hidden_cache_mb: float = 0
    # torch threads of each training worker; 0 = the cores of its node shared among the run's workers
    # on that node. Ray sets OMP_NUM_THREADS=1 in a worker holding 1 CPU, which left one of the
    # node's cores idle (a SmolLM2 step took ~2x as long); set it when trials run side by side.
    torch_threads: int = 0
    sentiment_sentences: int = 1  # ConvSent good and bad sentences per edit in a training step
    # Learning-rate schedule of the hypernetwork, one factor applied to both Adam groups (the
    # transform's lr and the edit learning rates' lr_lr): linear warm-up over warmup_steps, then
    # decay to min_lr_ratio x the base lr at max_steps. A pure function of the step, so a resumed
    # run continues the uninterrupted run's schedule. Defaults: constant (MEND; earlier runs).
    warmup_steps: int = 0
    lr_decay: str = "none"  # none | linear | cosine
    min_lr_ratio: float = 0.0  # the decayed lr at max_steps, as a fraction of the base lr
    # The share of training edits made from the plain prompt instead of the instructed edit input
    # (their sentiment rows plain too): each edit with this probability, drawn from the step seed
    # (train/step.py), so the editor also learns edits that hold without the instruction.
    # Validation and evaluation are unaffected.
    instruction_dropout: float = 0.0

    def __post_init__(self):
        if self.lr_decay not in ("none", "linear", "cosine"):
            raise ConfigError(f"train.lr_decay must be one of none|linear|cosine, got {self.lr_decay!r}")
        if self.torch_threads < 0:
            raise ConfigError(f"train.torch_threads must be >= 0 (0 = the node's cores), got {self.torch_threads!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.instruction_dropout <= 1.0:
            raise ConfigError(f"train.instruction_dropout must be in [0, 1], got {self.instruction_dropout!r}")


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    tasks: tuple[str, ...] = ()  # () = the run's tasks + hold-out tasks
    instruction_setting: str = ""  # "" = the run's setting
    batch_size: int = 16
    max_records: int | None = None


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    mode: str = "instructedit"  # single-task | multi-task | instructedit
    model: str = "smollm2-135m"
    experiment: str = "instructedit"
    tracking_uri: str = ""  # "" = $MLFLOW_TRACKING_URI or sqlite under ./mlruns
    data: DataConfig = field(default_factory=DataConfig)
    editor: EditorConfig = field(default_factory=EditorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> RunConfig:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        setting = self.data.instruction_setting
        if setting not in INSTRUCTION_SETTINGS and not setting.startswith("id:"):
            raise ConfigError(f"data.instruction_setting must be none|seen|unseen|id:<id>, got {setting!r}")
        if self.mode == "multi-task" and setting != "none":
            raise ConfigError("mode multi-task trains without instructions: set data.instruction_setting: none")
        if self.mode == "single-task" and len(self.data.tasks) != 1:
            raise ConfigError(f"mode single-task needs exactly one task, got {list(self.data.tasks)}")
        for task, n in self.data.balance.items():
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"data.balance.{task} must be a positive record count or null, got {n!r}")
        if abs(sum(self.data.split_fractions) - 1.0) > 1e-6:
            raise ConfigError(f"data.split_fractions must sum to 1, got {self.data.split_fractions}")
        overlap = sorted(set(self.data.tasks) & set(self.data.hold_out))
        if overlap:
            raise ConfigError(f"data.tasks and data.hold_out share {overlap}: a hold-out task is never trained on")
        why = selection_error(self.train.early_stop_metric, self.data.tasks, self.data.hold_out)
        if why:
            raise ConfigError(f"train.early_stop_metric: {why}")
        if self.train.batch_size < 1 or self.train.num_workers < 1:
            raise ConfigError("train.batch_size and train.num_workers must be >= 1")
        if self.train.batch_size % self.train.num_workers:
            raise ConfigError(
                f"train.batch_size {self.train.batch_size} must divide evenly over "
                f"{self.train.num_workers} workers (the global batch stays fixed)"
            )
        for t in self.data.tasks + self.data.hold_out:
            load_task(t)
        load_model_config(self.model)
        return self


SELECT_HINT = "select on val/<training task>/... or val/score"


def selection_error(metric: str, tasks: tuple[str, ...] | list[str] = (),
                    hold_out: tuple[str, ...] | list[str] = ()) -> str:
    """Why `metric` may not choose a checkpoint, stop training or rank study trials ("" = it may).

    Selection reads the validation split of the training tasks only: `val/score`, `val/<metric>`
    (the mean over training tasks) or `val/<training task>/<metric>`. A test or train split, or a
    hold-out task (data.hold_out, or a task YAML with hold_out: true), would let the reported
    numbers choose themselves. `tasks` empty = the training tasks are not known yet (not checked).
    """
    parts = str(metric).split("/")
    if len(parts) < 2 or not all(parts):
        return f"{metric!r} is not a metric key; {SELECT_HINT}"
    if parts[0] in ("test", "train"):
        return f"{metric!r} selects on the {parts[0]} split; {SELECT_HINT}"
    if parts[0] != "val":
        return f"{metric!r} is not a validation metric; {SELECT_HINT}"
    name = parts[1]
    if name in hold_out or name in task_names(hold_out=True):
        return f"{metric!r} selects on the hold-out task {name!r}; {SELECT_HINT}"
    if len(parts) >= 3:
        if name == "avg":
            return (f"{metric!r}: validation means over the training tasks are val/<metric> "
                    f"(e.g. val/{'/'.join(parts[2:])}); {SELECT_HINT}")
        if tasks and name in list_registry("tasks") and name not in tasks:
            return f"{metric!r} names {name!r}, not a training task (data.tasks: {list(tasks)}); {SELECT_HINT}"
    return ""


# ---------------------------------------------------------------------------------- conversion
def _convert(tp: Any, value: Any, where: str) -> Any:
    """Turn a YAML value into the annotated type, with errors that name the key."""
    origin = get_origin(tp)
    args = get_args(tp)
    if value is None:
        if type(None) in args or tp is Any:
            return None
        raise ConfigError(f"{where}: must not be null")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return dict(value)
    if args and type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return _convert(inner, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError as e:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from e
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}".lstrip("."))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"train.batch_size": 8, ...} (MLflow params, Tune search spaces)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        # One line naming the file and the line: "run.yaml:3: not valid YAML (expected ',' or ']' ...)".
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{where}: not valid YAML ({what})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    cur[keys[-1]] = value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["train.max_steps=10", "data.tasks=[recent]"] -> {"train.max_steps": 10, ...} (YAML values)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    d = to_dict(cfg)
    for k, v in overrides.items():
        _set_dotted(d, k, v)
    return from_dict(RunConfig, d, "overrides").validate()


def load_run_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run YAML (a path, or a name under configs/runs) plus dotted overrides -> RunConfig."""
    if path is None:
        data: dict[str, Any] = {}
        where = "defaults"
    else:
        p = Path(path)
        if not p.exists() and not p.suffix:
            p = CONFIG_DIR / "runs" / f"{path}.yaml"
        data = _read_yaml(p)
        where = str(p)
    for k, v in (overrides or {}).items():
        _set_dotted(data, k, v)
    try:
        return from_dict(RunConfig, data, where).validate()
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _registry_path(kind: str, name: str) -> Path:
    p = CONFIG_DIR / kind / f"{name}.yaml"
    if not p.exists():
        known = sorted(q.stem for q in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"unknown {kind[:-1]} {name!r}; known: {known}")
    return p


def load_task(name: str) -> TaskConfig:
    p = _registry_path("tasks", name)
    data = _read_yaml(p)
    data.setdefault("name", name)
    cfg = from_dict(TaskConfig, data, str(p))
    ids = [i.id for i in cfg.instructions]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{p}: duplicate instruction ids")
    if cfg.instructions and not cfg.seen_pool:
        raise ConfigError(f"{p}: every instruction is marked unseen; training needs a seen pool")
    return cfg


def load_model_config(name: str) -> ModelConfig:
    p = _registry_path("models", name)
    data = _read_yaml(p)
    data.setdefault("name", name)
    return from_dict(ModelConfig, data, str(p))


def run_model_config(cfg: RunConfig) -> ModelConfig:
    """The run's model config with the run's own choices applied (editor.edited_layers)."""
    mc = load_model_config(cfg.model)
    if cfg.editor.edited_layers:
        mc = dataclasses.replace(mc, edited_layers=tuple(cfg.editor.edited_layers))
    return mc


def list_registry(kind: str) -> list[str]:
    return sorted(q.stem for q in (CONFIG_DIR / kind).glob("*.yaml"))


# ------------------------------------------------------------------------------- task lists
def _registry_tasks() -> tuple[TaskConfig, ...]:
    """Every task YAML, parsed once per content: keyed by path and modification time, so tables
    that order tasks per cell do not reparse, and an edited or added YAML is read again."""
    paths = sorted((CONFIG_DIR / "tasks").glob("*.yaml"))
    return _load_tasks(tuple((str(p), p.stat().st_mtime_ns) for p in paths))


@functools.lru_cache(maxsize=8)
def _load_tasks(key: tuple[tuple[str, int], ...]) -> tuple[TaskConfig, ...]:
    return tuple(load_task(Path(path).stem) for path, _ in key)


def order_tasks(names, hold_out=None) -> list[str]:
    """`names` (deduplicated) in table order: training tasks by their YAML `order`, then hold-out
    tasks; within each group, tasks the registry does not know (or that have no `order`) after
    the ordered ones, alphabetically. `hold_out` None = the YAML `hold_out` flags; else the
    collection of tasks to put last (a run's data.hold_out)."""
    known = {t.name: t for t in _registry_tasks()}

    def key(name: str):
        task = known.get(name)
        held = (task is not None and task.hold_out) if hold_out is None else name in hold_out
        rank = task.order if task is not None else None
        return (held, rank is None, rank if rank is not None else 0, name)

    return sorted(dict.fromkeys(names), key=key)


def task_names(hold_out: bool | None = None) -> list[str]:
    """The task registry in table order: every task (None), only the hold-out tasks (True, YAML
    `hold_out: true`) or only the training tasks (False)."""
    tasks = _registry_tasks()
    names = [t.name for t in tasks if hold_out is None or t.hold_out == hold_out]
    return order_tasks(names)


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)

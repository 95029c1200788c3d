"""The registry of editing methods: the one place a method's name, label and loading are known.

Importable without torch (the CLI's choices, the analysis tables and the report read it): each
entry names its hyperparameter class and builder by dotted path, imported only when the method is
built. Table rows follow the registry's order.

Every method builds to the same pair, `(editable, make_edits)`: an EditableModel (editor/
editable.py) and `make_edits(batch, hidden) -> Edits | None`, what evaluate.core.evaluate_batch,
sequential evaluation and the edit API run. Untrained methods build from a base model and their
hyperparameters (configs/methods/<name>.yaml, with an optional per-model section, then the
caller's overrides); trained methods (MEND and InstructEdit) load an editor checkpoint, whose
hyperparameters are the run's editor section it carries.

Adding a method: its module under editor/ (a `build(loaded, hparams)` or a checkpoint loader and
its hyperparameter dataclass), its YAML, and one entry below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..config import CONFIG_DIR, ConfigError, _read_yaml, from_dict


@dataclass(frozen=True)
class Method:
    name: str  # CLI choice, `mode` tag, checkpoint method
    display: str  # the `method` tag and the table row
    trained: bool  # loads an editor checkpoint (else builds from a base model)
    build: str  # "module:function": trained -> load(ckpt, loaded, device), else build(loaded, hparams)
    hparams: str = ""  # "module:Class" of the typed hyperparameters ("" = none)
    reference: bool = False  # the unedited model: shown in tables, never a contender for best
    instructed: bool = False  # trained with instructions: its edit input carries the instruction
    single_task: bool = False  # one editor per task (tables use the one trained on the task shown)

    @property
    def config_path(self):
        return CONFIG_DIR / "methods" / f"{self.name}.yaml"

    def tags(self) -> dict[str, str]:
        return {"mode": self.name, "method": self.display}

    def hparams_class(self) -> type | None:
        return _resolve(self.hparams) if self.hparams else None

    def load_hparams(self, model: str = "", overrides: dict | None = None) -> Any:
        """configs/methods/<name>.yaml (its `models.<model>` section over the top level), then
        `overrides` (nested dicts) -> the typed hyperparameters; None for a method without any."""
        cls = self.hparams_class()
        if cls is None:
            if overrides:
                raise ConfigError(f"method {self.name} takes no hyperparameters, got {sorted(overrides)}")
            return None
        where = str(self.config_path)
        data = _read_yaml(self.config_path) if self.config_path.exists() else {}
        per_model = data.pop("models", None) or {}
        if not isinstance(per_model, dict):
            raise ConfigError(f"{where}: models must map model names to hyperparameter overrides")
        merged = _merge(data, per_model.get(model) or {})
        if overrides:
            merged = _merge(merged, overrides)
            where += " + overrides"
        try:
            return from_dict(cls, merged, where)
        except ValueError as e:  # a __post_init__ check: name the file
            msg = str(e)
            raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None

    def hparams_for(self, model: str, hparams: Any = None) -> Any:
        """The typed hyperparameters to build with: `hparams` if already typed, else the YAML's
        for `model` with `hparams` (a dict of overrides, or None) over them."""
        return self.load_hparams(model, hparams) if hparams is None or isinstance(hparams, dict) else hparams

    def load(self, model=None, *, hparams: Any = None, checkpoint=None, device: str = "cpu"):
        """-> (editable, make_edits). Untrained: `model` (a registry name or a LoadedModel) and
        `hparams` (typed, a dict of overrides, or None for the YAML's). Trained: `checkpoint`
        (a path or a loaded checkpoint dict), `model` optional (default: the checkpoint's)."""
        fn = _resolve(self.build)
        if self.trained:
            if checkpoint is None:
                raise ValueError(f"method {self.name} is trained: give its editor checkpoint")
            return fn(checkpoint, model, device)
        from ..models import LoadedModel, build_model

        loaded = model if isinstance(model, LoadedModel) else build_model(model, device=device)
        return fn(loaded, self.hparams_for(loaded.config.name, hparams))


def _resolve(dotted: str):
    mod, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_E = "instructedit.editor."
METHODS: tuple[Method, ...] = (
    Method("pre-edit", "Pre-edit", False, _E + "methods:build_unedited", reference=True),
    Method("ft-l", "FT-L", False, _E + "ftl:build", _E + "ftl:FTLConfig"),
    Method("rome", "ROME", False, _E + "rome:build", _E + "rome:ROMEConfig"),
    Method("memit", "MEMIT", False, _E + "memit:build", _E + "memit:MEMITConfig"),
    Method("alphaedit", "AlphaEdit", False, _E + "alphaedit:build", _E + "alphaedit:AlphaEditConfig"),
    Method("single-task", "MEND (single-task)", True, _E + "mend:load", single_task=True),
    Method("multi-task", "MEND (multi-task)", True, _E + "mend:load"),
    Method("instructedit", "InstructEdit", True, _E + "mend:load", instructed=True),
)
_BY_NAME = {m.name: m for m in METHODS}
DEFAULT_TRAINED = "instructedit"  # what a checkpoint that names no method was trained as


def names(trained: bool | None = None) -> list[str]:
    return [m.name for m in METHODS if trained is None or m.trained == trained]


def get(name: str) -> Method:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known: {names()}") from None


def by_display(display: str) -> Method | None:
    return next((m for m in METHODS if m.display == display), None)


def method_of(ckpt: dict) -> Method:
    """The method an editor checkpoint was trained as: its `method`, else its run's `mode`."""
    name = ckpt.get("method") or (ckpt.get("run_config") or {}).get("mode") or DEFAULT_TRAINED
    return get(name)


def build_unedited(loaded, hparams=None):
    """Pre-edit: the base model through the default editable view, and no edits."""
    from .editable import EditableModel, no_edits

    return EditableModel(loaded), no_edits

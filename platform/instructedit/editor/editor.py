"""The MEND editor: edit(batch) -> per-edit low-rank factors; apply them batched or to a model.

edit(): one forward+backward of the edit loss over B edit rows captures (u, d) for every edited
weight (hooks.capture), the transform maps them to (u~, d~), and the factors of edit e are
U_e = u~ (T x in) and D_e = -lr_W d~ (T x out), so dW_e = D_e^T U_e = -lr_W sum_t d~_t u~_t^T.
Nothing dense is formed: `patched` adds (x U_e^T) D_e to a layer's output, and `apply` sums the
edits into a plain Hugging Face model, returning a handle whose revert() restores it bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import EditorConfig, ModelConfig, from_dict, to_dict
from ..data.batches import TokenBatch
from ..models import LoadedModel, edited_layer_indices, edited_module_names, get_module, weight_fingerprint
from . import losses
from .checkpoint import load_editor_checkpoint
from .hooks import LowRankEdit, capture, is_transposed, patched, weight_shape
from .split import SplitModel
from .transform import GradientTransform

Edits = dict[str, LowRankEdit]


@dataclass
class EditInfo:
    pre_loss: torch.Tensor  # (E,) edit loss before the edit


class CheckpointMismatch(ValueError):
    pass


class MendEditor(nn.Module):
    """The hypernetwork plus a reference to the frozen base model (never a submodule: the
    editor's state_dict, optimizer and DDP wrapper see only the editor's own weights)."""

    def __init__(self, loaded: LoadedModel, cfg: EditorConfig):
        super().__init__()
        self.cfg = cfg
        self.model_cfg: ModelConfig = loaded.config
        object.__setattr__(self, "loaded", loaded)  # keep the base model out of the module tree
        model = loaded.model
        self.names = edited_module_names(self.model_cfg, model)
        self.layers = {n: get_module(model, n) for n in self.names}
        self.split = SplitModel(model, self.model_cfg, min(edited_layer_indices(self.model_cfg, model)))
        self.shape_key: dict[str, str] = {}
        self.mode: dict[str, int] = {}
        groups: dict[str, list[str]] = {}
        for n in self.names:
            out_dim, in_dim = weight_shape(self.layers[n])
            key = f"{in_dim}x{out_dim}" if cfg.shared else n.replace(".", "_")
            groups.setdefault(key, []).append(n)
            self.shape_key[n] = key
            self.mode[n] = len(groups[key]) - 1
        self.transforms = nn.ModuleDict()
        for key, members in groups.items():
            out_dim, in_dim = weight_shape(self.layers[members[0]])
            self.transforms[key] = GradientTransform(in_dim, out_dim, len(members), cfg.rank, cfg.n_hidden, cfg.norm)
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), float(cfg.edit_lr)))
        self.fingerprint = weight_fingerprint(model, self.names)

    # ------------------------------------------------------------------------------ base model
    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return self.edit_lrs.device

    def edits_in_dim(self, name: str) -> int:
        return weight_shape(self.layers[name])[1]

    def lower(self, batch: TokenBatch) -> torch.Tensor:
        return self.split.lower(batch.input_ids, batch.attention_mask)

    def answer_logits(self, batch: TokenBatch, hidden: torch.Tensor | None = None,
                      edits: Edits | None = None, row_edit: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at the answer positions of `batch` (n_sel, vocab), with edits applied if given."""
        h = self.lower(batch) if hidden is None else hidden
        ctx = patched(self.layers, edits, batch.row_edit if row_edit is None else row_edit) if edits \
            else contextlib.nullcontext()
        with ctx:
            final = self.split.upper(h, batch.attention_mask)
        return self.split.logits(final, batch.answer_mask)

    # ------------------------------------------------------------------------------ editing
    def edit_gradients(self, batch: TokenBatch, hidden: torch.Tensor | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Per-token layer inputs u and output gradients d of the edit loss (row r = edit r)."""
        h = self.lower(batch) if hidden is None else hidden
        with torch.enable_grad(), capture(self.layers) as cap:
            final = self.split.upper(h, batch.attention_mask)
            logits = self.split.logits(final, batch.answer_mask)
            rows = losses.answer_rows(batch.answer_mask)
            per_row = losses.nll(logits, batch.answer_ids[batch.answer_mask], rows, len(batch))
            # Sum over rows: each row's gradient is the gradient of its own mean loss.
            grads = torch.autograd.grad(per_row.sum(), [cap.delta[n] for n in self.names])
        d = {n: g.detach() for n, g in zip(self.names, grads)}
        return cap.u, d, per_row.detach()

    def transform(self, u: dict[str, torch.Tensor], d: dict[str, torch.Tensor],
                  token_mask: torch.Tensor) -> Edits:
        """(u, d) per token -> the low-rank factors of every edit; pad tokens get zero factors."""
        sel = token_mask.bool()
        edits: Edits = {}
        for i, n in enumerate(self.names):
            g = self.transforms[self.shape_key[n]]
            u_t, d_t = g(u[n][sel], d[n][sel], self.mode[n])
            U = u[n].new_zeros(u[n].shape).masked_scatter(sel[..., None], u_t)
            D = d[n].new_zeros(d[n].shape).masked_scatter(sel[..., None], d_t)
            edits[n] = LowRankEdit(U=U, D=-self.edit_lrs[i] * D)
        return edits

    def edit(self, batch: TokenBatch, hidden: torch.Tensor | None = None) -> tuple[Edits, EditInfo]:
        """One edit per row of `batch` (prompt -> target). Returns factors indexed by row."""
        u, d, pre_loss = self.edit_gradients(batch, hidden)
        edits = self.transform(u, d, batch.attention_mask)
        return edits, EditInfo(pre_loss=pre_loss)

    # ------------------------------------------------------------------------------ apply
    def apply(self, edits: Edits, which: list[int] | None = None) -> AppliedEdits:
        return apply_edits(self.model, self.layers, edits, which)

    # ------------------------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict:
        return {
            "format": "instructedit-editor/1",
            "editor_config": to_dict(self.cfg),
            "model_config": to_dict(self.model_cfg),
            "model_name": self.model_cfg.name,
            "edited_weights": list(self.names),
            "fingerprint": self.fingerprint,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({**self.checkpoint_state(), **(extra or {})}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def from_checkpoint(cls, ckpt: dict | str | Path, loaded: LoadedModel | None = None,
                        device: str | torch.device = "cpu") -> MendEditor:
        if not isinstance(ckpt, dict):
            ckpt = load_checkpoint_file(ckpt)
        if loaded is None:
            from ..models import build_model

            loaded = build_model(from_dict(ModelConfig, ckpt["model_config"]), device=device)
        names = edited_module_names(loaded.config, loaded.model)
        if names != ckpt["edited_weights"]:
            raise CheckpointMismatch(
                f"editor was trained on weights {ckpt['edited_weights'][:3]}... of {ckpt['model_name']}, "
                f"but model {loaded.config.name} has {names[:3]}...")
        fp = weight_fingerprint(loaded.model, names)
        if fp != ckpt["fingerprint"]:
            raise CheckpointMismatch(
                f"editor checkpoint was trained for base model {ckpt['model_name']!r} (fingerprint "
                f"{ckpt['fingerprint']}), but the given model {loaded.config.name!r} has fingerprint {fp}")
        editor = cls(loaded, from_dict(EditorConfig, ckpt["editor_config"]))
        editor.load_state_dict(ckpt["state_dict"])
        return editor.to(device)


def load_checkpoint_file(path: str | Path) -> dict:
    """An editor.pt (or its folder), loaded safely and checked: see checkpoint.py."""
    return load_editor_checkpoint(path)


# ---------------------------------------------------------------------------------- dense apply
class AppliedEdits:
    """Edits summed into a model's weights; revert() restores the saved originals exactly."""

    def __init__(self, originals: dict[str, torch.Tensor], layers: dict[str, nn.Module]):
        self._originals = originals
        self._layers = layers
        self.active = True

    def revert(self) -> None:
        if not self.active:
            return
        with torch.no_grad():
            for n, w in self._originals.items():
                self._layers[n].weight.copy_(w)
        self.active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


@torch.no_grad()
def apply_edits(model: nn.Module, layers: dict[str, nn.Module], edits: Edits,
                which: list[int] | None = None) -> AppliedEdits:
    originals = {}
    for n, e in edits.items():
        mod = layers[n]
        if which is not None:
            e = LowRankEdit(e.U[which], e.D[which])
        dw = e.dense().to(mod.weight.dtype)
        originals[n] = mod.weight.detach().clone()
        mod.weight.add_(dw.T if is_transposed(mod) else dw)
    return AppliedEdits(originals, layers)


def edits_digest(edits: Edits) -> str:
    h = hashlib.sha256()
    for n in sorted(edits):
        h.update(edits[n].dense().detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]

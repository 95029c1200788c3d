"""MEND on the editable model: edit(batch) -> per-edit low-rank factors from transformed gradients.

edit(): one forward+backward of the edit loss over B edit rows captures (u, d) for every edited
weight (EditableModel.edit_gradients), the transform maps them to (u~, d~), and the factors of edit
e are U_e = u~ (T x in) and D_e = -lr_W d~ (T x out), so dW_e = D_e^T U_e = -lr_W sum_t d~_t u~_t^T.
Nothing dense is formed: the factors run batched through the patched forward or are summed into the
model by apply() (editor/editable.py).

The nn.Module holds only the hypernetwork (transforms, edit_lrs): the base model is reached through
the EditableModel part and is never a submodule, so the state_dict, optimizer and DDP wrapper see
only MEND's own weights, with the same keys as checkpoints written before the editable model was
split out (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import EditorConfig, ModelConfig, from_dict, to_dict
from ..data.batches import TokenBatch
from ..models import LoadedModel, edited_module_names, weight_fingerprint
from .checkpoint import load_editor_checkpoint
from .editable import EditableModel, Edits, LowRankEdit
from .hooks import weight_shape
from .transform import GradientTransform


@dataclass
class EditInfo:
    pre_loss: torch.Tensor  # (E,) edit loss before the edit


class CheckpointMismatch(ValueError):
    pass


class MendEditor(EditableModel, nn.Module):
    """The hypernetwork on top of an editable model (the YAML's edited weights)."""

    def __init__(self, loaded: LoadedModel, cfg: EditorConfig):
        nn.Module.__init__(self)
        EditableModel.__init__(self, loaded)
        self.cfg = cfg
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
            self.transforms[key] = GradientTransform(in_dim, out_dim, len(members), cfg.rank, cfg.n_hidden, cfg.norm,
                                                     cfg.norm_eps, cfg.norm_eps_on)
        self.edit_lrs = nn.Parameter(torch.full((len(self.names),), float(cfg.edit_lr)))

    @property
    def device(self) -> torch.device:
        return self.edit_lrs.device

    # ------------------------------------------------------------------------------ editing
    def transform(self, u: dict[str, torch.Tensor], d: dict[str, torch.Tensor],
                  token_mask: torch.Tensor) -> Edits:
        """(u, d) per token -> the low-rank factors of every edit; unselected tokens get zero factors."""
        edits: Edits = {}
        # The editor keeps its own dtype (fp32) whatever the base model's: a bf16 model's (u, d)
        # are transformed in fp32, and the factors go back in the model's dtype.
        dtype = self.edit_lrs.dtype
        for i, n in enumerate(self.names):
            sel = self.selected_tokens(u[n], d[n], token_mask)
            g = self.transforms[self.shape_key[n]]
            u_t, d_t = g(u[n][sel].to(dtype), d[n][sel].to(dtype), self.mode[n])
            U = u[n].new_zeros(u[n].shape).masked_scatter(sel[..., None], u_t.to(u[n].dtype))
            D = d[n].new_zeros(d[n].shape).masked_scatter(sel[..., None], d_t.to(d[n].dtype))
            edits[n] = LowRankEdit(U=U, D=(-self.edit_lrs[i] * D).to(D.dtype))
        return edits

    def selected_tokens(self, u: torch.Tensor, d: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(N, L) bool: the tokens of one weight that feed its running statistics and its edit.

        "gradient" (MEND's mask): attended tokens whose u and d are both non-zero. A token whose
        output gradient is zero (each row's last token, which predicts nothing the loss scores)
        has a zero rank-1 gradient, but normalisation would turn it into a non-zero term of the
        edit and a sample of the statistics. "attention" (legacy checkpoints): every attended token.
        """
        sel = token_mask.bool()
        if self.cfg.token_select == "gradient":
            sel = sel & (u != 0).any(-1) & (d != 0).any(-1)
        return sel

    def edit_token_mask(self, batch: TokenBatch) -> torch.Tensor:
        """(E, L): the tokens of the edit rows that may make the edit (editor.edit_tokens), before
        selected_tokens' own choice. Every MEND edit (training, validation, evaluation, the edit
        API, the gradient analysis) goes through here, so all of them edit alike."""
        mask = batch.attention_mask
        if self.cfg.edit_tokens == "all":
            return mask
        if batch.instruction_len is None:  # all tokens would silently undo the setting
            raise ValueError("editor.edit_tokens=input needs the edit rows' instruction_len: build them "
                             "with data.batches.edit_batch")
        pos = torch.arange(mask.shape[1], device=mask.device)
        return mask * (pos[None, :] >= batch.instruction_len.to(mask.device)[:, None])

    def edit(self, batch: TokenBatch, hidden: torch.Tensor | None = None) -> tuple[Edits, EditInfo]:
        """One edit per row of `batch` (prompt -> target). Returns factors indexed by row."""
        u, d, pre_loss = self.edit_gradients(batch, hidden)
        edits = self.transform(u, d, self.edit_token_mask(batch))
        return edits, EditInfo(pre_loss=pre_loss)

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
        editor = cls(loaded, editor_config_of(ckpt))
        editor.load_state_dict(ckpt["state_dict"])
        return editor.to(device)


# Editor fields added after checkpoints were first written, with the value that reproduces how
# those older checkpoints were trained and edit. A checkpoint whose editor_config lacks a field
# was written before it existed and gets the legacy value; new checkpoints store every field.
LEGACY_EDITOR_FIELDS = {"norm_eps": 1e-5, "norm_eps_on": "var", "token_select": "attention", "loc_positions": "answer",
                        "edit_tokens": "all"}


def editor_config_of(ckpt: dict) -> EditorConfig:
    stored = dict(ckpt["editor_config"])
    return from_dict(EditorConfig, {**LEGACY_EDITOR_FIELDS, **stored}, "editor_config")


def load_checkpoint_file(path: str | Path) -> dict:
    """An editor.pt (or its folder), loaded safely and checked: see checkpoint.py."""
    return load_editor_checkpoint(path)


def mend_edits(editor: MendEditor):
    """The `make_edits` of a MEND editor for evaluate.core.evaluate_batch."""

    def make(batch: TokenBatch, hidden: torch.Tensor) -> Edits:
        with torch.no_grad():  # the transform needs no graph at evaluation
            u, d, _ = editor.edit_gradients(batch, hidden)
            return editor.transform(u, d, editor.edit_token_mask(batch))

    return make


def load(checkpoint: dict | str | Path, model=None, device: str | torch.device = "cpu"):
    """-> (MEND editor, make_edits) from an editor checkpoint; `model`: a LoadedModel, a registry
    name, or None for the model the checkpoint names."""
    if isinstance(model, str):
        from ..models import build_model

        model = build_model(model, device=device)
    editor = MendEditor.from_checkpoint(checkpoint, model, device=device).eval()
    return editor, mend_edits(editor)

"""Shared fixtures: a tiny LLaMA with a lightly perturbed editor, and hand-made records."""

import pytest
import torch
from eval_records import make_convsent, make_records

# Tiny models on a shared CPU: one thread is many times faster than several contending ones.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_editor():
    from instructedit.config import EditorConfig
    from instructedit.editor.mend import MendEditor
    from instructedit.models import build_model

    torch.manual_seed(0)
    editor = MendEditor(build_model("tiny-llama"), EditorConfig(rank=8, edit_lr=0.5)).eval()
    with torch.no_grad():  # lightly perturbed: not the identity, so edits differ from plain gradients
        for p in editor.transforms.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return editor


@pytest.fixture(scope="session")
def records():
    return make_records(5, 1) + make_convsent(3, 2)

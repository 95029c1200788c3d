"""The local transformers writer on the tiny random model (fast, offline)."""

import pytest
import torch
from instructedit.instructions.local_writer import LocalWriter
from instructedit.models import build_model

MSGS = [{"role": "system", "content": "You write instructions."},
        {"role": "user", "content": "Write one instruction for editing a fact. " * 30}]


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny-llama")


def test_local_backend_produces_seeded_candidates(tiny):
    w = LocalWriter("tiny-llama", max_new_tokens=12, loaded=tiny)
    state = torch.random.get_rng_state()
    a = w.generate(MSGS, n=3, seed=1)
    assert len(a) == 3 and all(isinstance(t, str) for t in a)
    assert w.generate(MSGS, n=3, seed=1) == a  # seeded
    assert w.generate(MSGS, n=3, seed=2) != a
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert w.describe()["model"] == "tiny-llama" and w.calls == 3

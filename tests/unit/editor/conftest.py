"""Shared fixtures of the editor tests: tiny models, a temp cache and a small text file for key
statistics (facts to edit: editor_facts.py)."""

import random

import pytest
import torch
from editor_facts import SUBJECTS, WORDS

torch.set_num_threads(1)  # tiny models on a shared CPU


@pytest.fixture(scope="session")
def _key_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def key_cache(_key_cache_dir, monkeypatch):
    """Key statistics go to a temp cache (one per session, so they are computed once), never the
    user's. Set per test: set for the session, it outlived these tests and sent every later test's
    model cache there, so the SmolLM2 test converted the GGUF file again (~25 s a suite)."""
    monkeypatch.setenv("INSTRUCTEDIT_CACHE", str(_key_cache_dir))
    return _key_cache_dir


@pytest.fixture(scope="session")
def stats_text(tmp_path_factory) -> str:
    """~300 plain sentences (about 9k byte tokens): enough for a well-conditioned C of width 256."""
    rng = random.Random(0)
    nouns = ["cat", "river", "city", "king", "song", "road", "tree", "ship", "book", "hill", "door", "bird"]
    verbs = ["sees", "finds", "holds", "leaves", "keeps", "follows", "paints", "builds"]
    lines = [f"The {rng.choice(WORDS)} {rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)} near "
             f"{rng.choice(SUBJECTS)}." for _ in range(300)]
    p = tmp_path_factory.mktemp("text") / "sentences.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.fixture(scope="session")
def llama():
    from instructedit.models import build_model

    return build_model("tiny-llama")


@pytest.fixture(scope="session")
def gpt2():
    from instructedit.models import build_model

    return build_model("tiny-gpt2")

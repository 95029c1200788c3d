"""Shared fixtures of the editor tests: tiny models, a temp cache and a small text file for key
statistics (facts to edit: editor_facts.py)."""

import random

import pytest
import torch
from editor_facts import SUBJECTS, WORDS

torch.set_num_threads(1)  # tiny models on a shared CPU


@pytest.fixture(scope="session")
def key_cache(tmp_path_factory):
    """Key statistics go to a temp cache, never the user's."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("INSTRUCTEDIT_CACHE", str(path))
    yield path
    mp.undo()


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

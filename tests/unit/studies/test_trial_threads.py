"""A trial's test runs in a 1-CPU Ray task, where Ray sets OMP_NUM_THREADS=1: the task must take the
trial's share of the node's cores, as training workers do (train.torch_threads)."""

import torch
from instructedit.evaluate import runner
from instructedit.studies import trial


def test_the_trial_evaluation_task_sets_its_torch_threads(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "run_evaluation", lambda *a, **k: seen.setdefault("threads", torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what a 1-CPU Ray task starts with
        trial._evaluate([], "out", "editor.pt", "seen", "test", 16, 96, 0, "", {}, False, 2)
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 2

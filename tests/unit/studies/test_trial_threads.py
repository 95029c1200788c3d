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


def test_every_trial_scores_instructed_probes_and_edits_as_trained(monkeypatch):
    """A multi-task MEND trial (trained without instructions) edits from the plain prompt and still
    gets the instructed probe columns, as `instructedit evaluate` gives it and every baseline."""
    seen = {}
    monkeypatch.setattr(runner, "run_evaluation", lambda *a, **k: seen.update(k))
    setting, instructed = runner.instruction_use("none")
    trial._evaluate([], "out", "editor.pt", setting, "test", 16, 96, 0, "", {}, False, 1, instructed)
    assert seen["setting"] == "seen" and seen["options"].instructed_edit is False
    assert seen["options"].instructed_probes
    assert runner.instruction_use("seen") == ("seen", True)
    assert runner.instruction_use("seen", "unseen") == ("unseen", True)  # the instructions study's unseen arm
    assert runner.instruction_use("", "unseen") == ("unseen", False)

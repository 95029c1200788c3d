"""One checkpoint resolver for edit, evaluate and load_editor: a run folder means its best
checkpoint by validation (best.json, else the val metrics stored in each checkpoint), bad files
are one line and exit 2, and loading never runs code from the file."""

import os
import pickle

import pytest
import torch
from instructedit.cli import main
from instructedit.config import EditorConfig, load_run_config, to_dict
from instructedit.editor import checkpoint as ck

RUN = "demo-20250101-120000-000"


@pytest.fixture(scope="module")
def editor():
    from instructedit.editor.mend import MendEditor
    from instructedit.models import build_model

    torch.manual_seed(0)
    return MendEditor(build_model("tiny-llama"), EditorConfig(rank=4))


def make_run(root, editor, pointer=True, with_val=True):
    """A run folder as training leaves it: step 20 is the best (0.762), step 40 the latest (0.7)."""
    cfg = to_dict(load_run_config(None, {"model": "tiny-llama", "data.tasks": ["counterfact"]}))
    run = root / RUN
    for step, score in ((20, 0.762), (40, 0.7)):
        val = {"val/score": score, "val/edit_success": score} if with_val else {}
        d = run / ck.step_dir_name(step)
        editor.save(d / ck.EDITOR_FILE, extra={"step": step, "val": val, "run_config": cfg})
        torch.save({"step": step}, d / ck.STATE_FILE)
    if pointer:
        ck.write_best(run, 20, "val/score", 0.762)
    return run


def test_run_folder_resolves_to_best_by_pointer_and_by_stored_val(tmp_path, editor):
    run = make_run(tmp_path / "a", editor)
    r = ck.resolve(run)
    assert r.path == run / "step-000020" / "editor.pt" and r.chosen == "best.json"
    assert r.line() == f"best: step 20, val/score 0.762 ({run / 'step-000020' / 'editor.pt'})"
    assert ck.read_best(run) == {"step": 20, "metric": "val/score", "value": 0.762,
                                 "path": "step-000020/editor.pt"}
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temp file left

    old = make_run(tmp_path / "b", editor, pointer=False)  # written before best.json existed
    r = ck.resolve(old)
    assert r.step == 20 and r.chosen == "val metrics" and r.line().startswith("best: step 20, val/score 0.762")

    # A step folder or a file is taken as given.
    assert ck.resolve(run / "step-000040").step == 40
    assert ck.resolve(run / "step-000040" / "editor.pt").line().startswith("editor: step 40, val/score 0.700")

    # The pointer is rewritten whole.
    ck.write_best(run, 40, "val/score", 0.9)
    assert ck.resolve(run).step == 40


def test_run_folder_without_pointer_or_val_is_a_clear_error(tmp_path, editor):
    run = make_run(tmp_path, editor, pointer=False, with_val=False)
    with pytest.raises(ck.CheckpointError, match="no best.json and no val metrics") as e:
        ck.resolve(run)
    assert str(e.value).startswith(str(run)) and "\n" not in str(e.value)
    with pytest.raises(ck.CheckpointNotFound, match="no such file or folder"):
        ck.resolve(tmp_path / "nope")
    with pytest.raises(ck.CheckpointError, match="no tracking store"):
        ck.resolve("0" * 32)


def test_edit_evaluate_and_load_editor_take_the_best(tmp_path, editor, capsys, monkeypatch):
    from instructedit.api import load_editor
    from instructedit.evaluate import runner

    run = make_run(tmp_path, editor)
    best = str(run / "step-000020" / "editor.pt")
    assert load_editor(run).checkpoint == best

    rc = main(["edit", "--editor", str(run), "--prompt", "The color of vbz is", "--target", "gold",
               "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"best: step 20, val/score 0.762 ({best})" in err

    class Seen(Exception):
        pass

    def fake_run_evaluation(records, out, *, target, **kw):
        raise Seen(target.checkpoint, str(out))

    monkeypatch.setattr("instructedit.data.pipeline.load_records", lambda *a, **k: [])
    monkeypatch.setattr(runner, "run_evaluation", fake_run_evaluation)
    with pytest.raises(Seen) as e:
        main(["evaluate", "--editor", str(run), "--tasks", "counterfact", "--no-log", "--quiet",
              "--out", str(tmp_path / "eval")])
    assert e.value.args[0] == best
    assert f"best: step 20, val/score 0.762 ({best})" in capsys.readouterr().err


class Evil:
    """Unpickling this would create a file: what a hostile .pt file does with os.system."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "garbage", "foreign", "evil_torch",
                                  "evil_pickle", "folder"])
def test_bad_checkpoints_are_one_line_and_exit_2(tmp_path, editor, capsys, case):
    good = editor.save(tmp_path / "good" / "editor.pt", extra={"step": 1})
    bad = tmp_path / "bad.pt"
    marker = tmp_path / "pwned"
    expect = {"missing": "not found", "empty": "empty file", "truncated": "truncated",
              "garbage": "truncated or not a torch file", "foreign": "not an instructedit editor checkpoint",
              "evil_torch": "refused to load", "evil_pickle": "refused to load",
              "folder": "no editor.pt, no best.json"}[case]
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif case == "foreign":
        torch.save({"weights": torch.zeros(2)}, bad)
    elif case in ("evil_torch", "evil_pickle"):
        Evil.marker = str(marker)
        if case == "evil_torch":
            torch.save({"format": "instructedit-editor/1", "x": Evil()}, bad)
        else:
            bad.write_bytes(pickle.dumps(Evil(), protocol=2))  # torch.load reads protocol 2
        assert not marker.exists()
    elif case == "folder":
        bad.mkdir()
    rc = main(["edit", "--editor", str(bad), "--prompt", "A is", "--target", "b"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expect in err and str(bad) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists()  # nothing from the file ran
    with pytest.raises(ck.CheckpointError):
        ck.load_editor_checkpoint(bad)
    assert not marker.exists()

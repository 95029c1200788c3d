"""`instructedit evaluate --run` takes the instruction setting the editor was *trained* with from
its checkpoint: a study trial's run is tagged with the setting it was tested in (the instructions
study's unseen arm trains on seen instructions), and that tag must not become the default."""

from types import SimpleNamespace

import pytest
import torch
from instructedit.config import EditorConfig, load_run_config, to_dict
from instructedit.editor import checkpoint as ck
from instructedit.evaluate import run as evrun

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    from instructedit.editor.mend import MendEditor
    from instructedit.models import build_model

    torch.manual_seed(0)
    editor = MendEditor(build_model("tiny-llama"), EditorConfig(rank=4))
    cfg = to_dict(load_run_config(None, {"model": "tiny-llama", "data.tasks": ["counterfact"],
                                         "data.instruction_setting": "seen"}))
    folder = tmp_path_factory.mktemp("artifact") / "checkpoint"
    editor.save(folder / ck.EDITOR_FILE, extra={"step": 20, "val": {"val/score": 0.5}, "run_config": cfg})
    return folder


@pytest.mark.parametrize(("run_tag", "asked", "expected"), [
    ("unseen", None, "seen"),        # the trial's test tag is not the training setting
    ("unseen", "unseen", "unseen"),  # asking still wins
    ("seen", None, "seen"),
])
def test_run_default_setting_is_the_checkpoints(monkeypatch, checkpoint_folder, run_tag, asked, expected):
    from instructedit import api, tracking

    monkeypatch.setattr(api, "_download_run_checkpoint", lambda rid, uri: checkpoint_folder)
    tags = {"instruction_setting": run_tag, "mode": "instructedit", "tasks": "counterfact"}
    monkeypatch.setattr(tracking, "get_run", lambda rid, uri=None: SimpleNamespace(data=SimpleNamespace(tags=tags)))
    p = evrun.plan(evrun.EvalRequest(run=RUN_ID, instructions=asked, tasks=("counterfact",), log=False))
    assert p.setting == expected
    assert p.tags["instruction_setting"] == expected
    assert p.instructed_edit
    # Results go back into the trial's run only when they are of the setting that run holds.
    assert evrun._logs_to_editor_run(p) == (expected == run_tag)


def test_an_evaluation_run_hashes_the_records_it_reads(shared_data, tmp_path):
    """A new evaluation run is tagged with the digest of its test records, instructions left out:
    Pre-edit (no instructions) and an instructed evaluation of the same records hash alike, another
    set of records does not."""
    def hashed(**kw):
        req = evrun.EvalRequest(baseline="pre-edit", model="tiny-llama", tasks=("recent",), split="test",
                                data_dir=str(shared_data), out=str(tmp_path / "o"), log=False, **kw)
        p = evrun.plan(req)
        records = evrun.load(p)
        return p.tags["dataset_hash"], len(records)

    plain, n = hashed(max_records=6, instructions="none")
    assert len(plain) == 64 and n > 0
    assert hashed(max_records=6, instructions="seen") == (plain, n)
    assert hashed(max_records=3, instructions="none")[0] != plain

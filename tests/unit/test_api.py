"""The editing API: load a trained editor, edit a model in place, revert exactly, save a plain HF
model, and refuse bad input clearly. One tiny-llama editor is trained once for the module (60 steps, a few seconds)."""

import json
import random
import subprocess
import sys

import pytest
import torch
from instructedit.api import EditRequest, RequestError, load_editor, read_requests
from instructedit.data.record import EditRecord, Probe
from instructedit.editor.mend import CheckpointMismatch

WORDS = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm", "sun", "ash"]


def synthetic(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subj = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(3))
        out.append(EditRecord(
            task="counterfact", case_id=f"syn-{seed}-{i}",
            prompt=f"The {rng.choice(['color', 'metal', 'beast'])} of {subj} is", target_new=rng.choice(WORDS),
            subject=subj, locality=[Probe("neighborhood", f"The home of {subj[::-1]}x is", [rng.choice(WORDS)])],
        ))
    return out


def train_tiny_editor(out_dir):
    """The recipe of tests/unit/train/test_learning.py, shortened: ~0.9 val reliability in 60 steps."""
    from instructedit.config import load_run_config
    from instructedit.train.loop import train_editor

    cfg = load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
        "editor.rank": 64, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2,
        "editor.c_edit": 1.0, "editor.c_loc": 100.0,
        "train.batch_size": 8, "train.max_steps": 60, "train.val_every": 60, "train.log_every": 60,
        "train.val_size": 32, "train.early_stop_patience": 10, "train.max_length": 48,
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is shared: one thread is faster than contended two
    try:
        result = train_editor(cfg, synthetic(400, 1), synthetic(32, 2), out_dir, verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert result.checkpoint is not None
    return result.checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return train_tiny_editor(tmp_path_factory.mktemp("editor") / "ckpt")


@pytest.fixture(scope="module")
def editor(ckpt):
    return load_editor(ckpt)


def logits(editor, text="The color of vbz is gold. The beast of kmt is"):
    ids = editor.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return editor.model(**ids).logits


# ------------------------------------------------------------------------------- editing
def test_edit_raises_target_probability_and_revert_is_exact(editor):
    before = logits(editor)
    weights = {n: p.detach().clone() for n, p in editor.model.named_parameters()}
    reqs = [EditRequest("The color of vbz is", "gold", rephrases=["The metal of vbz is"]),
            EditRequest("The beast of kmt is", "wolf", task="counterfact")]
    result = editor.edit(reqs)
    assert result.active and len(result) == 2
    for info in result:
        p = info.probe("prompt")
        assert p.p_after > p.p_before * 1.5, (info.request.prompt, p)
        assert all(a > b for a, b in zip(p.token_p_after, p.token_p_before))
    assert result[0].probe("rephrase").p_after > result[0].probe("rephrase").p_before
    assert not torch.equal(logits(editor), before)  # the model itself changed, in place
    result.revert()
    assert not result.active
    assert torch.equal(logits(editor), before)
    for n, p in editor.model.named_parameters():
        assert torch.equal(p, weights[n]), n


def whole_model_probs(editor, prompt, target):
    """P(target tokens) from one plain forward of the whole model: what the API's packed passes
    (editor/packed.py, the LM head at the answer positions) must reproduce."""
    tok = editor.tokenizer
    p = tok(prompt)["input_ids"]
    a = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(editor.model(input_ids=torch.tensor([p + a])).logits[0].float(), -1)
    return [float(lp[len(p) - 1 + j, t].exp()) for j, t in enumerate(a)]


def test_probes_match_the_whole_model_before_and_after(editor):
    # One instruction for both requests: their edit inputs share its template prefix (cached).
    ins = "Give the new answer to the question below."
    reqs = [EditRequest("The color of vbz is", "gold", rephrases=["The metal of vbz is"], instruction=ins),
            EditRequest("The beast of kmt is", "wolf", instruction=ins)]

    def expected():
        return [[(whole_model_probs(editor, p.text, info.request.target),
                  editor.next_tokens(p.text, 3) if p.kind != "edit_input" else []) for p in info.probes]
                for info in result]

    result = editor.edit(reqs, top_k=3)
    try:
        after = expected()
        result.revert()
        before = expected()
    finally:
        result.revert()
    split = editor.editable.split
    assert split.shared_hits + split.shared_misses >= 1  # the instruction prefix: cut off, run once, kept
    for info, exp_before, exp_after in zip(result, before, after):
        assert info.probes[0].kind == "edit_input"
        for p, (tp_b, top_b), (tp_a, top_a) in zip(info.probes, exp_before, exp_after):
            assert p.token_p_before == pytest.approx(tp_b, rel=1e-4, abs=1e-7), p.text
            assert p.token_p_after == pytest.approx(tp_a, rel=1e-4, abs=1e-7), p.text
            assert [t for t, _ in p.top_before] == [t for t, _ in top_b]
            assert [t for t, _ in p.top_after] == [t for t, _ in top_a]
            assert [v for _, v in p.top_after] == pytest.approx([v for _, v in top_a], rel=1e-4)
        nll = -sum(torch.tensor(info.probe("edit_input").token_p_before).log().tolist())
        assert info.pre_loss == pytest.approx(nll / len(info.probe("edit_input").token_p_before), rel=1e-4)


def test_a_lower_weight_changed_in_place_is_not_served_from_the_prefix_cache(editor):
    ins = "Give the new answer to the question below."
    req = EditRequest("The color of vbz is", "gold", instruction=ins)
    editor.edit(req).revert()  # the instruction prefix is cached now
    w = editor.editable.split.blocks[0].mlp.up_proj.weight  # below the edited blocks (another method's edit)
    with torch.no_grad():
        w.mul_(1.5)
    try:
        with editor.edit(req) as result:
            p = result[0].probe("edit_input")
            result.revert()
            assert p.token_p_before == pytest.approx(whole_model_probs(editor, p.text, "gold"), rel=1e-4, abs=1e-7)
    finally:
        with torch.no_grad():
            w.div_(1.5)


def test_top_k_of_a_prompt_cut_to_max_length_comes_from_the_whole_prompt(editor, monkeypatch):
    prompt = "The color of vbz is gold, and the metal of vbz is"  # byte tokens: longer than 20
    expected = editor.next_tokens(prompt, 3)
    monkeypatch.setattr(editor, "max_length", 20)  # the probe row keeps the prompt's last tokens only
    with editor.edit(EditRequest(prompt, "iron"), top_k=3) as result:
        p = result[0].probe("prompt")
        assert p.top_before == expected
        assert p.top_after == editor.next_tokens(prompt, 3)


def test_context_manager_reverts_and_single_request(editor):
    before = logits(editor)
    with editor.edit(EditRequest("The metal of zzk is", "iron"), max_new_tokens=4, top_k=3) as result:
        p = result[0].probe("prompt")
        assert p.continuation_before is not None and p.continuation_after is not None
        assert len(p.top_before) == 3 and len(p.top_after) == 3
    assert torch.equal(logits(editor), before)


def test_saved_model_reloads_and_reproduces_edited_logits(editor, tmp_path):
    from transformers import AutoModelForCausalLM

    result = editor.edit([EditRequest("The color of vbz is", "gold")])
    try:
        edited = logits(editor)
        out = result.save(tmp_path / "edited")
    finally:
        result.revert()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = editor.tokenizer("The color of vbz is gold. The beast of kmt is", return_tensors="pt")
    with torch.no_grad():
        again = reloaded(**ids).logits
    assert torch.allclose(again, edited, atol=1e-5, rtol=0), (again - edited).abs().max()
    assert not torch.allclose(again, logits(editor), atol=1e-5, rtol=0)  # differs from the reverted model
    manifest = json.loads((out / "edits.json").read_text())
    assert manifest["edits"][0]["target"] == "gold"
    assert manifest["base_model"]["name"] == "tiny-llama"
    assert manifest["editor"]["checkpoint"].endswith("editor.pt")
    card = (out / "MODEL_CARD.md").read_text()
    assert "The color of vbz is" in card and "gold" in card
    assert (out / "tokenizer.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_failed_save_leaves_nothing(editor, tmp_path, monkeypatch):
    result = editor.edit([EditRequest("The color of vbz is", "gold")])
    try:
        def boom(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(editor.tokenizer, "save_pretrained", boom)
        with pytest.raises(OSError, match="disk full"):
            result.save(tmp_path / "edited")
    finally:
        result.revert()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="reverted"):
        result.save(tmp_path / "edited")


def test_locality_check_flags_a_changed_answer(editor, tmp_path):
    from instructedit.api import first_answer, locality_facts, locality_probes

    facts = locality_facts()
    assert len(facts) >= 10 and all(f.prompt and f.answer for f in facts)
    assert first_answer(" Paris. It is big") == "paris" == first_answer("\n Paris, France")
    # A request's own locality prompts replace the built-in facts; --locality prompts come on top.
    own = locality_probes([EditRequest("A is", "b", locality=["X is", {"prompt": "Y is", "answer": "z"}])], ["Q is"])
    assert [(p.prompt, p.answer, p.source) for p in own] == [
        ("X is", "", "request 1"), ("Y is", "z", "request 1"), ("Q is", "", "command line")]
    with pytest.raises(RequestError, match="locality"):
        EditRequest("A is", "b", locality="X is").validate()

    # The edited prompt itself, given as a locality prompt, must come out CHANGED; the facts run too.
    req = EditRequest("The color of vbz is", "gold")
    probes = locality_probes([req], [req.prompt])
    assert probes[0].source == "built-in facts" and probes[-1].source == "command line"
    before = logits(editor)
    result = editor.edit([req], locality=probes, locality_tokens=4)
    try:
        assert len(result.locality) == len(facts) + 1
        assert all(p.before is not None and p.after is not None for p in result.locality)
        assert all(p.p_before is not None and p.p_after is not None for p in result.locality[:-1])
        assert result.locality[-1].changed and result.locality[-1] in result.changed
        out = result.save(tmp_path / "edited")
    finally:
        result.revert()
    assert torch.equal(logits(editor), before)
    assert probes[-1].after is None  # the caller's probes are not written into
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Unrelated prompts (locality check)" in card and "The capital of France is" in card
    assert "| CHANGED |" in card
    manifest = json.loads((out / "edits.json").read_text())
    assert manifest["locality"][-1]["changed"] is True and manifest["locality"][0]["answer"] == facts[0].answer


# ------------------------------------------------------------------------------- instructions
def test_instruction_selection(editor, monkeypatch):
    from instructedit.config import load_task

    cf = load_task("counterfact")
    # Trained without instructions: the task validates but adds none.
    rec, note = editor.resolve(EditRequest("P is", "x", task="counterfact"))
    assert rec.edit_input == "P is" and "without instructions" in note
    monkeypatch.setattr(editor, "instruction_setting", "seen")
    rec, _ = editor.resolve(EditRequest("P is", "x", task="counterfact"))
    first = cf.seen_pool[0]
    assert rec.instruction_id == first.id
    assert rec.edit_input == f"Task: CounterFact\nDescription: {first.text}\nInput: P is"
    monkeypatch.setattr(editor, "instruction_seed", 3)
    ids = {editor.resolve(EditRequest(f"P{i} is", "x", task="counterfact"))[0].instruction_id for i in range(20)}
    assert len(ids) > 1 and ids <= {i.id for i in cf.seen_pool}
    monkeypatch.setattr(editor, "instruction_seed", None)
    # An explicit instruction overrides the task's pool.
    rec, _ = editor.resolve(EditRequest("P is", "x", task="counterfact", instruction="Say x."))
    assert rec.edit_input == "Task: CounterFact\nDescription: Say x.\nInput: P is"
    # ConvSent: slots filled from label and subject; a missing one is an error.
    rec, _ = editor.resolve(EditRequest("What is your opinion of cats?", "I love cats.", subject="cats",
                                        task="convsent", label="positive"))
    assert "[" not in rec.instruction and "cats" in rec.instruction and "positive" in rec.instruction
    with pytest.raises(RequestError, match="label"):
        editor.resolve(EditRequest("What is your opinion of cats?", "I love cats.", subject="cats",
                                   task="convsent"))


# ------------------------------------------------------------------------------- bad input
def test_checkpoint_for_another_model(ckpt):
    with pytest.raises(CheckpointMismatch, match="tiny-llama"):
        load_editor(ckpt, model="tiny-gpt2")
    from instructedit.models import build_model

    other = build_model("tiny-llama")
    plain = load_editor(ckpt, model=other.model, tokenizer=other.tokenizer)  # a plain HF model is fine
    assert plain.model is other.model
    with torch.no_grad():
        other.model.model.layers[-1].mlp.down_proj.weight.mul_(1.01)
    with pytest.raises(CheckpointMismatch, match="fingerprint"):
        load_editor(ckpt, model=other)


def test_bad_requests(editor):
    before = logits(editor)
    with pytest.raises(RequestError, match="target is empty"):
        editor.edit([EditRequest("The color of vbz is", "gold"), EditRequest("The color of x is", "  ")])
    with pytest.raises(RequestError, match=r"request 2: .*unknown task 'nope'"):
        editor.edit([EditRequest("A is", "b"), EditRequest("The color of x is", "red", task="nope")])
    with pytest.raises(RequestError, match="no edit requests"):
        editor.edit([])
    assert torch.equal(logits(editor), before)  # nothing applied


def test_read_requests(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "A is", "target": "b", "rephrases": ["A =" ]}\n\n'
                    '{"prompt": "C is", "target": "d", "task": "counterfact"}\n')
    reqs = read_requests(good)
    assert [r.target for r in reqs] == ["b", "d"] and reqs[0].rephrases == ["A ="]
    assert reqs[1].source == f"{good}:3"
    cases = {
        '{"prompt": "A is", "target": "b"}\n{"prompt": "C is", "target": \n': "not valid JSON",
        '{"prompt": "A is", "target": "b"}\n{"prompt": "C is", "target": ""}\n': "target is empty",
        '{"prompt": "A is", "target": "b"}\n{"prompt": "C is", "tgt": "d"}\n': "unknown key",
        '{"prompt": "A is", "target": "b"}\n["C is", "d"]\n': "expected a JSON object",
        '{"prompt": "A is", "target": "b"}\n{"prompt": "C is", "target": "d", "rephrases": "x"}\n': "list",
    }
    for i, (text, msg) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.jsonl"
        bad.write_text(text)
        with pytest.raises(RequestError, match=msg) as e:
            read_requests(bad)
        assert str(e.value).startswith(f"{bad}:2: "), str(e.value)
    with pytest.raises(RequestError, match="not found"):
        read_requests(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(RequestError, match="no requests"):
        read_requests(tmp_path / "empty.jsonl")


def test_load_from_directory_and_mlflow_run(ckpt, tracking_uri, tmp_path, monkeypatch):
    from instructedit import tracking

    monkeypatch.setenv("INSTRUCTEDIT_CACHE", str(tmp_path / "cache"))

    run_dir = ckpt.parent.parent  # training output dir -> its best step (best.json)
    assert load_editor(run_dir).checkpoint == str(ckpt) and ckpt.parent.name == "step-000060"
    assert load_editor(run_dir).resolved.line().startswith("best: step 60, val/score ")
    with tracking.run("api-test", "edit") as rid:
        tracking.log_artifact(ckpt, "checkpoint")  # what train_run logs
    ed = load_editor(rid)
    assert ed.run_id == rid and ed.model_name == "tiny-llama"
    assert ed.checkpoint == str(tmp_path / "cache" / "editors" / rid / "checkpoint" / "editor.pt")
    assert ed.resolved.line().startswith("best: step 60, val/score ") and rid in ed.resolved.line()
    assert load_editor(rid).checkpoint == ed.checkpoint  # cached: no second download
    with pytest.raises(FileNotFoundError, match="cannot download"):
        load_editor("0" * 32)
    assert [p.name for p in (tmp_path / "cache" / "editors").iterdir()] == [rid]  # no temp dir left
    with pytest.raises(FileNotFoundError, match="not found"):
        load_editor("/nonexistent/editor.pt")


def test_package_exports_are_lazy():
    subprocess.run([sys.executable, "-c", "import sys, instructedit; assert 'torch' not in sys.modules"],
                   check=True)
    import instructedit
    from instructedit import api

    assert instructedit.load_editor is api.load_editor and instructedit.EditRequest is EditRequest
    assert instructedit.read_requests is read_requests
    with pytest.raises(AttributeError):
        _ = instructedit.no_such_name


def test_load_method_refuses_a_trained_method_and_unknown_names():
    from instructedit.api import load_method
    from instructedit.config import ConfigError

    with pytest.raises(ValueError, match="load_editor"):
        load_method("instructedit", "tiny-llama")
    with pytest.raises(ConfigError, match="unknown method"):
        load_method("nope", "tiny-llama")


def test_trained_checkpoints_carry_their_method(ckpt):
    from instructedit.editor.checkpoint import load_editor_checkpoint

    ck = load_editor_checkpoint(ckpt)
    assert ck["method"] == "multi-task"
    assert load_editor(ckpt).method.name == "multi-task"

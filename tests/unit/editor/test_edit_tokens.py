"""editor.edit_tokens: "input" leaves an instructed edit row's instruction prefix out of the edit
and of the running statistics (zero factors there, the same factors elsewhere, a plain row edited
as under "all"), refuses edit rows that do not say where the instruction ends, and every MEND path
that builds edit rows (evaluate_batch, the edit API) hands the editor that length."""

import pytest
import torch
from instructedit.config import ConfigError, EditorConfig
from instructedit.data.batches import edit_batch, encode_pairs, instruction_prefix
from instructedit.data.instructions import task_config, with_instruction
from instructedit.data.record import EditRecord, Probe
from instructedit.editor.mend import MendEditor, mend_edits

ML = 160  # byte tokens: room for the template
INSTRUCTION = "Give the new answer to the question below."


def records():
    """Two instructed edits and a plain one."""
    plain = [EditRecord(task="counterfact", case_id=f"c{i}", prompt=p, target_new=t, subject=s,
                        rephrase_prompts=[f"So, {p}"], locality=[Probe("neighborhood", f"The home of {s}x is", ["oak"])])
             for i, (p, t, s) in enumerate([("The color of vbz is", "gold", "vbz"), ("The beast of kmt is", "wolf", "kmt"),
                                            ("The metal of prd is", "iron", "prd")])]
    task = task_config("counterfact")
    return [with_instruction(r, task, "t", INSTRUCTION) for r in plain[:2]] + plain[2:]


@pytest.fixture(scope="module")
def loaded():
    from instructedit.models import build_model

    return build_model("tiny-llama")


def editors(loaded):
    """An "all" and an "input" editor with the same (perturbed, so not the identity) weights."""
    torch.manual_seed(0)
    both = [MendEditor(loaded, EditorConfig(rank=32, edit_lr=1e-2, edit_tokens=t)) for t in ("all", "input")]
    with torch.no_grad():
        for p in both[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    both[1].load_state_dict(both[0].state_dict())
    return both


def test_edit_rows_carry_their_instruction_length(loaded):
    recs, tok = records(), loaded.tokenizer
    b = edit_batch(recs, tok, ML)
    pre = tok(instruction_prefix(recs[0]), add_special_tokens=True)["input_ids"]
    assert b.instruction_len.tolist() == [len(pre), len(pre), 0]
    assert b.input_ids[0, : len(pre)].tolist() == pre
    assert edit_batch(recs, tok, ML, instructed=False).instruction_len.tolist() == [0, 0, 0]
    assert b.select([2, 0]).instruction_len.tolist() == [0, len(pre)]  # carried by select (and to)


def test_input_edits_leave_the_instruction_out(loaded):
    ed_all, ed_in = (e.eval() for e in editors(loaded))
    b = edit_batch(records(), loaded.tokenizer, ML)
    n = b.instruction_len
    instr = torch.arange(b.input_ids.shape[1])[None, :] < n[:, None]
    with torch.no_grad():
        e_all, _ = ed_all.edit(b)
        e_in, _ = ed_in.edit(b)
    # What "input" removes: the instruction tokens' part of the edit in the blocks below the top one
    # (the top block's output at a position reaches only that position's logits, so its d is zero
    # wherever no answer token is predicted, and token_select="gradient" has dropped them already).
    assert any((e_all[w].D[instr] != 0).any() for w in ed_all.names)
    for w in ed_all.names:
        assert (e_in[w].U[instr] == 0).all() and (e_in[w].D[instr] == 0).all(), w
        torch.testing.assert_close(e_in[w].U[~instr], e_all[w].U[~instr], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(e_in[w].D[~instr], e_all[w].D[~instr], rtol=1e-5, atol=1e-7)
        # the plain row (no instruction): the same edit under both settings
        torch.testing.assert_close(e_in[w].U[2], e_all[w].U[2], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(e_in[w].D[2], e_all[w].D[2], rtol=1e-5, atol=1e-7)


def test_input_statistics_see_only_the_input_tokens(loaded):
    ed_all, ed_in = (e.train() for e in editors(loaded))
    b = edit_batch(records(), loaded.tokenizer, ML)
    ed_all.edit(b)
    ed_in.edit(b)
    u, d, _ = ed_in.edit_gradients(b)
    fewer = []
    for w in ed_in.names:
        c_all = ed_all.transforms[ed_all.shape_key[w]].norm.count[ed_all.mode[w]]
        c_in = ed_in.transforms[ed_in.shape_key[w]].norm.count[ed_in.mode[w]]
        assert c_in == int(ed_in.selected_tokens(u[w], d[w], ed_in.edit_token_mask(b)).sum()), w
        fewer.append(c_in < c_all)
    assert any(fewer)  # the blocks below the top one (see above)


def test_input_refuses_rows_without_instruction_length(loaded):
    ed_all, ed_in = editors(loaded)
    b = encode_pairs(loaded.tokenizer, ["The color of vbz is"], ["gold"], row_edit=[0])
    ed_all.edit(b)  # "all" needs nothing
    with pytest.raises(ValueError, match="instruction_len"):
        ed_in.edit(b)
    with pytest.raises(ConfigError, match="editor.edit_tokens"):
        EditorConfig(edit_tokens="prompt")


def spy(make, seen):
    def wrapped(batch, hidden):
        seen.append(batch)
        return make(batch, hidden)
    return wrapped


def test_evaluate_batch_and_the_edit_api_hand_over_the_instruction_length(loaded, tmp_path):
    from instructedit.api import EditRequest, load_editor
    from instructedit.evaluate.core import EvalOptions, evaluate_batch

    recs = records()
    _, ed_in = editors(loaded)
    ed_in.eval()
    want = edit_batch(recs, loaded.tokenizer, ML).instruction_len.tolist()
    seen = []
    evaluate_batch(ed_in, recs, spy(mend_edits(ed_in), seen), ML, EvalOptions(generation=False))
    assert seen[0].instruction_len.tolist() == want

    ed_in.save(tmp_path / "editor.pt")
    bound = load_editor(tmp_path / "editor.pt", loaded, max_length=ML)
    assert bound.editable.cfg.edit_tokens == "input"
    seen.clear()
    bound.make_edits = spy(bound.make_edits, seen)
    result = bound.edit([EditRequest(r.prompt, r.target_new, instruction=INSTRUCTION) for r in recs[:2]]
                        + [EditRequest(recs[2].prompt, recs[2].target_new)])
    try:
        got = seen[0].instruction_len.tolist()
        assert got[0] > 0 and got[1] > 0 and got[2] == 0  # the API's generic template has its own length
        instr = torch.arange(seen[0].input_ids.shape[1])[None, :] < seen[0].instruction_len[:, None].cpu()
        for w, e in result.edits.items():
            assert (e.U.cpu()[instr] == 0).all(), w
    finally:
        result.revert()

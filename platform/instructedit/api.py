"""Apply an editing method to a model: the Python API behind `instructedit edit`.

    from instructedit import load_editor, load_method, EditRequest

    editor = load_editor("runs/my-run-20250101-120000-123")   # its best checkpoint; or editor.pt, or a run id
    result = editor.edit([EditRequest("The Eiffel Tower is in", "Rome", task="counterfact")])
    ...                        # editor.model now carries the edit (all requests summed, in place)
    result.save("edited-model")   # a plain Hugging Face model + MODEL_CARD.md + edits.json
    result.revert()            # the original weights, bit for bit

    rome = load_method("rome", "smollm2-135m")   # an untrained method of the registry, same edit()

A request's instruction: `instruction` if given (explicit text, used as is); else, with `task`, an
instruction of that task's pool with the task template applied, picked the way the editor was
trained: the fixed id of an `id:<id>` run, otherwise the pool's first seen instruction (or a seeded
choice per request with `load_editor(..., instruction_seed=N)`). ConvSent's [TOPIC] slot takes
`subject`, [LABEL] takes `label`. An editor trained without instructions (multi-task MEND) gets
the plain prompt whatever the task says; untrained methods (ROME, MEMIT, ...) always edit from the
plain prompt, keyed on `subject` where they locate one (else the prompt's last token).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, TaskConfig, to_dict
from .data.batches import edit_batch, encode_pairs
from .data.instructions import request_instruction, task_config, with_instruction
from .data.record import EditRecord, Sentiment
from .editor import losses, methods
from .editor.checkpoint import CheckpointError, CheckpointNotFound, Resolved, resolve
from .editor.editable import AppliedEdits, EditableModel, Edits, edits_digest
from .editor.mend import CheckpointMismatch
from .editor.methods import Method
from .editor.packed import lower_stamp, upper_packed
from .models import LoadedModel, build_model

__all__ = [
    "BoundEditor",
    "CheckpointError",
    "CheckpointMismatch",
    "EditRequest",
    "EditResult",
    "LocalityProbe",
    "ProbeResult",
    "RequestError",
    "RequestInfo",
    "load_editor",
    "load_method",
    "locality_facts",
    "locality_probes",
    "read_requests",
    "resolve_checkpoint",
]

# The {task} slot when an explicit instruction comes without a task.
GENERIC_TASK = "Knowledge Editing"
LABELS = ("positive", "negative")


class RequestError(ValueError):
    """A bad edit request; the message says which request (file:line for JSONL) and what is wrong."""


# ------------------------------------------------------------------------------------- requests
@dataclass
class EditRequest:
    prompt: str
    target: str
    subject: str = ""
    rephrases: list[str] = field(default_factory=list)
    task: str = ""  # selects the instruction (and template) from the task's pool
    instruction: str = ""  # explicit instruction text; overrides the task's pool
    label: str = ""  # ConvSent: positive | negative (the [LABEL] slot)
    # Unrelated prompts this edit must not change: strings, or {"prompt", "answer"} objects.
    locality: list = field(default_factory=list)
    source: str = field(default="", repr=False, compare=False)  # where it came from, for errors

    def where(self, index: int | None = None) -> str:
        if self.source:
            return self.source
        return f"request {index + 1}" if index is not None else "request"

    def validate(self, index: int | None = None) -> EditRequest:
        w = self.where(index)
        for name in ("prompt", "target", "subject", "task", "instruction", "label"):
            if not isinstance(getattr(self, name), str):
                raise RequestError(f"{w}: {name} must be a string, got {type(getattr(self, name)).__name__}")
        if not self.prompt.strip():
            raise RequestError(f"{w}: prompt is empty")
        if not self.target.strip():
            raise RequestError(f"{w}: target is empty (the edit needs a new answer)")
        if isinstance(self.rephrases, str) or not isinstance(self.rephrases, (list, tuple)):
            raise RequestError(f"{w}: rephrases must be a list of strings")
        for i, r in enumerate(self.rephrases):
            if not isinstance(r, str) or not r.strip():
                raise RequestError(f"{w}: rephrases[{i}] must be a non-empty string")
        if isinstance(self.locality, str) or not isinstance(self.locality, (list, tuple)):
            raise RequestError(f"{w}: locality must be a list of prompts or {{\"prompt\", \"answer\"}} objects")
        for i, item in enumerate(self.locality):
            ok = (isinstance(item, str) and item.strip()) or (
                isinstance(item, dict) and isinstance(item.get("prompt"), str) and item["prompt"].strip()
                and set(item) <= {"prompt", "answer"} and isinstance(item.get("answer", ""), str))
            if not ok:
                raise RequestError(f"{w}: locality[{i}] must be a non-empty prompt or {{\"prompt\", \"answer\"}}")
        if self.label and self.label not in LABELS:
            raise RequestError(f"{w}: label must be one of {LABELS}, got {self.label!r}")
        return self

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> EditRequest:
        w = source or "request"
        if not isinstance(d, dict):
            raise RequestError(f"{w}: expected a JSON object, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise RequestError(f"{w}: unknown key(s) {unknown}; known: {known}")
        missing = [k for k in ("prompt", "target") if k not in d]
        if missing:
            raise RequestError(f"{w}: missing {' and '.join(missing)}")
        req = cls(**{k: (list(v) if k in ("rephrases", "locality") and isinstance(v, list) else v)
                     for k, v in d.items()}, source=source)
        return req.validate()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    @property
    def key(self) -> str:
        """A stable id (the seed of a seeded instruction choice; the locality checks do not count)."""
        d = self.to_dict()
        d.pop("locality")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def read_requests(path: str | os.PathLike) -> list[EditRequest]:
    """Edit requests from a JSONL file: one JSON object per line; blank lines are skipped.
    Any problem raises RequestError naming the file and the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RequestError(f"{p}: requests file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RequestError(f"{p}: cannot read requests file: {e}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RequestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(EditRequest.from_dict(obj, source=where))
    if not out:
        raise RequestError(f"{p}: no requests (expected one JSON object per line)")
    return out


# --------------------------------------------------------------------------------------- results
@dataclass
class ProbeResult:
    kind: str  # edit_input (what the editor saw) | prompt | rephrase
    text: str
    p_before: float  # joint probability of the target's answer tokens
    p_after: float | None = None
    token_p_before: list[float] = field(default_factory=list)
    token_p_after: list[float] = field(default_factory=list)
    continuation_before: str | None = None  # greedy, when asked for
    continuation_after: str | None = None
    top_before: list[tuple[str, float]] = field(default_factory=list)  # next-token top-k, when asked for
    top_after: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class LocalityProbe:
    """An unrelated prompt re-asked after the edits: its greedy answer should not change."""

    prompt: str
    answer: str = ""  # the expected answer, when known (P(answer) is measured too)
    source: str = ""  # where it came from: a request, the built-in facts, the command line
    before: str | None = None  # greedy continuation
    after: str | None = None
    p_before: float | None = None
    p_after: float | None = None

    @property
    def changed(self) -> bool:
        """The first answer (up to the first sentence mark) differs before and after."""
        if self.before is None or self.after is None:
            return False
        return first_answer(self.before) != first_answer(self.after)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "changed": self.changed}


def first_answer(text: str) -> str:
    """' Paris. It is the largest city' -> 'paris': what a locality check compares."""
    text = text.strip().split("\n", 1)[0]
    text = re.split(r"[.,;:!?]", text, maxsplit=1)[0]
    return " ".join(text.lower().split())


LOCALITY_FACTS = "locality_facts.yaml"


def locality_facts() -> list[LocalityProbe]:
    """The built-in general facts (configs/locality_facts.yaml)."""
    from .config import CONFIG_DIR, _read_yaml

    path = CONFIG_DIR / LOCALITY_FACTS
    facts = _read_yaml(path).get("facts")
    if not isinstance(facts, list) or not all(isinstance(f, dict) and isinstance(f.get("prompt"), str)
                                              for f in facts):
        raise ConfigError(f"{path}: facts must be a list of {{prompt, answer}}")
    return [LocalityProbe(f["prompt"], str(f.get("answer") or ""), "built-in facts") for f in facts]


def locality_probes(requests: Iterable[EditRequest], extra: Iterable[str] = ()) -> list[LocalityProbe]:
    """The requests' own locality prompts where they give any, the built-in facts otherwise; plus
    `extra` (e.g. --locality). Each prompt once."""
    out: list[LocalityProbe] = []
    for i, r in enumerate(requests):
        for item in r.locality:
            prompt, answer = (item, "") if isinstance(item, str) else (item["prompt"], item.get("answer", ""))
            out.append(LocalityProbe(prompt, answer, r.where(i)))
    if not out:
        out = locality_facts()
    out += [LocalityProbe(p, "", "command line") for p in extra]
    seen: set[str] = set()
    return [p for p in out if not (p.prompt in seen or seen.add(p.prompt))]


@dataclass
class RequestInfo:
    request: EditRequest
    instruction_id: str
    instruction: str
    edit_input: str
    pre_loss: float
    probes: list[ProbeResult]
    note: str = ""

    def probe(self, kind: str) -> ProbeResult:
        return next(p for p in self.probes if p.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        return {**self.request.to_dict(), "instruction_id": self.instruction_id, "instruction": self.instruction,
                "edit_input": self.edit_input, "pre_loss": self.pre_loss, "note": self.note,
                "probes": [dataclasses.asdict(p) for p in self.probes]}


class EditResult:
    """The requests' edits summed into the model's weights (in place). revert() restores the
    original weights bit for bit; save() writes the edited model as a plain HF model."""

    def __init__(self, editor: BoundEditor, infos: list[RequestInfo], edits: Edits, handle: AppliedEdits,
                 locality: list[LocalityProbe] | None = None):
        self.editor = editor
        self.infos = infos
        self.edits = edits
        self._handle = handle
        self.locality: list[LocalityProbe] = locality or []

    @property
    def changed(self) -> list[LocalityProbe]:
        """Locality prompts whose answer the edits changed."""
        return [p for p in self.locality if p.changed]

    @property
    def requests(self) -> list[EditRequest]:
        return [i.request for i in self.infos]

    @property
    def active(self) -> bool:
        return self._handle.active

    @property
    def digest(self) -> str:
        return edits_digest(self.edits)

    def revert(self) -> None:
        self._handle.revert()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.revert()

    def __len__(self) -> int:
        return len(self.infos)

    def __iter__(self):
        return iter(self.infos)

    def __getitem__(self, i: int) -> RequestInfo:
        return self.infos[i]

    def manifest(self) -> dict[str, Any]:
        return {
            "format": "instructedit-edits/1",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "base_model": self.editor.base_model_info(),
            "editor": self.editor.describe(),
            "edits_digest": self.digest,
            "edits": [i.to_dict() for i in self.infos],
            "locality": [p.to_dict() for p in self.locality],
        }

    def save(self, out_dir: str | os.PathLike) -> Path:
        """The edited model (save_pretrained) + tokenizer + MODEL_CARD.md + edits.json, written to a
        temp dir and renamed into place; nothing is left at `out_dir` if anything fails."""
        if not self.active:
            raise RuntimeError("the edits were reverted: nothing to save")
        out = Path(out_dir)
        check_save_target(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            self.editor.model.save_pretrained(tmp)
            self.editor.tokenizer.save_pretrained(tmp)
            manifest = self.manifest()
            (tmp / "edits.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            (tmp / "MODEL_CARD.md").write_text(model_card(manifest))
            if out.exists():  # an empty dir (checked above): replace it
                out.rmdir()
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out


def check_save_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--save target {out} exists and is not an empty directory")


def model_card(m: dict[str, Any]) -> str:
    base, ed = m["base_model"], m["editor"]
    display = ed.get("method_display") or "InstructEdit"
    how = f"a trained {display} editor" if ed.get("trained", True) else f"{display} (no training; hyperparameters below)"
    lines = [
        f"# {base['name']} edited with {display}",
        "",
        (f"This model is `{base['name']}` ({base.get('source_ref') or base['source']}) with {len(m['edits'])} "
         f"fact edit(s) applied by {how}. The edits are summed into the "
         f"weights {', '.join(f'`{w}`' for w in ed['edited_weights'])}; everything else is unchanged."),
        "",
        "## Editor",
        "",
    ]
    if ed.get("trained", True):
        lines += [
            f"- checkpoint: `{ed['checkpoint']}`" + (f" (MLflow run `{ed['run_id']}`)" if ed.get("run_id") else ""),
            (f"- run: {ed.get('run_name') or '?'} (mode {ed.get('mode') or '?'}, instruction setting "
             f"{ed.get('instruction_setting') or '?'}, tasks {', '.join(ed.get('tasks') or []) or '?'})"),
            f"- trained for base model fingerprint `{base['fingerprint']}`; editor step {ed.get('step', '?')}",
        ]
    else:
        lines += [f"- method: {ed['method']} (edits from the plain prompt)",
                  f"- hyperparameters: `{json.dumps(ed.get('hyperparameters'), sort_keys=True)}`",
                  f"- base model fingerprint `{base['fingerprint']}`"]
    lines += [
        f"- edits digest `{m['edits_digest']}`; created {m['created']}",
        "",
        "## Edits",
        "",
        "| # | prompt | new target | task | instruction | P(target) before | after |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    for i, e in enumerate(m["edits"], 1):
        pr = next(p for p in e["probes"] if p["kind"] == "prompt")
        after = "" if pr["p_after"] is None else f"{pr['p_after']:.3g}"
        lines.append(f"| {i} | {cell(e['prompt'])} | {cell(e['target'])} | {e['task'] or '-'} | "
                     f"{cell(e['instruction']) or '-'} | {pr['p_before']:.3g} | {after} |")
    loc = m.get("locality") or []
    if loc:
        changed = sum(1 for p in loc if p["changed"])
        lines += ["", "## Unrelated prompts (locality check)", "",
                  (f"Greedy answers to {len(loc)} prompt(s) the edits should not touch, before and after; "
                   f"{changed} changed."), "",
                  "| prompt | expected | before | after | P(expected) before | after | |",
                  "|---|---|---|---|---|---|---|"]
        for p in loc:
            pb = "" if p["p_before"] is None else f"{p['p_before']:.3g}"
            pa = "" if p["p_after"] is None else f"{p['p_after']:.3g}"
            lines.append(f"| {cell(p['prompt'])} | {cell(p['answer']) or '-'} | {cell(p['before'] or '')} | "
                         f"{cell(p['after'] or '')} | {pb} | {pa} | {'CHANGED' if p['changed'] else 'same'} |")
    lines += ["", ("Rephrases and per-probe numbers are in `edits.json`. Load with "
                   "`AutoModelForCausalLM.from_pretrained(<this dir>)`."), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- editor
HEAD_POSITIONS = 256  # answer positions per LM-head call (bounds the (positions x vocabulary) logits)

_Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # one row, unpadded: ids, answer mask, answer ids


def _rows(b) -> list[_Row]:
    """The rows of a TokenBatch without their padding."""
    return [(b.input_ids[r, :n], b.answer_mask[r, :n], b.answer_ids[r, :n])
            for r, n in enumerate(b.attention_mask.sum(1).tolist())]


class BoundEditor:
    """An editing method bound to its base model (the model is edited in place by edit()): a
    trained editor (load_editor) or an untrained method built on the model (load_method). Both
    edit through the same seam: the method's EditableModel and its make_edits (editor/methods.py)."""

    def __init__(self, editable: EditableModel, make_edits, method: Method, *, ckpt: dict | None = None,
                 checkpoint: str = "", run_id: str = "", hparams: Any = None,
                 instruction_seed: int | None = None, max_length: int = 256):
        self.editable = editable
        self.make_edits = make_edits
        self.method = method
        self.hparams = hparams
        self.model: torch.nn.Module = editable.model
        self.tokenizer = editable.tokenizer
        self.device: torch.device = editable.device
        ckpt = ckpt or {}
        self.checkpoint = checkpoint
        self.run_id = run_id
        self.instruction_seed = instruction_seed
        self.max_length = max_length
        self.run_config: dict = ckpt.get("run_config") or {}
        self.step = ckpt.get("step")
        self.model_name: str = ckpt.get("model_name") or editable.model_cfg.name
        self.fingerprint: str = ckpt.get("fingerprint") or editable.fingerprint
        data = self.run_config.get("data") or {}
        # Only a method trained on instructed inputs edits from one; every other method gets the
        # plain prompt (the same rule evaluation follows, EvalOptions.instructed_edit).
        self.instruction_setting: str = data.get("instruction_setting", "") if method.trained else "none"
        self.instruction_set: str = data.get("instruction_set", "")
        self.resolved: Resolved | None = None  # how load_editor found the checkpoint
        self._stamp: tuple | None = None  # the lower weights the split's prefix cache was filled under

    def describe(self) -> dict[str, Any]:
        rc = self.run_config
        hp = to_dict(self.hparams) if dataclasses.is_dataclass(self.hparams) else None
        return {"method": self.method.name, "method_display": self.method.display, "trained": self.method.trained,
                "checkpoint": self.checkpoint, "run_id": self.run_id, "run_name": rc.get("name", ""),
                "mode": rc.get("mode", "") or self.method.name, "instruction_setting": self.instruction_setting,
                "instruction_set": self.instruction_set, "tasks": list((rc.get("data") or {}).get("tasks") or []),
                "step": self.step, "hyperparameters": hp, "edited_weights": list(self.editable.names)}

    def base_model_info(self) -> dict[str, Any]:
        mc = self.editable.model_cfg
        return {"name": mc.name, "source": mc.source, "source_ref": mc.hf_id or mc.gguf_file,
                "fingerprint": self.fingerprint}

    # ------------------------------------------------------------------------- instructions
    def resolve(self, req: EditRequest, index: int | None = None) -> tuple[EditRecord, str]:
        """The request as an EditRecord with its instruction and edit input; plus a note."""
        req.validate(index)
        w = req.where(index)
        task_cfg = None
        if req.task:
            try:
                task_cfg = task_config(req.task)  # parsed once per version of the YAML
            except ConfigError as e:
                raise RequestError(f"{w}: {e}") from None
        sentiment = Sentiment(topic=req.subject, label=req.label, good=[], bad=[]) if req.label else None
        record = EditRecord(task=req.task, case_id=req.key, prompt=req.prompt, target_new=req.target,
                            subject=req.subject, rephrase_prompts=list(req.rephrases), sentiment=sentiment)
        note, ins_id, raw = "", "", ""
        if not self.method.trained:  # an untrained method never learned to read instructions
            if req.instruction:
                note = f"{self.method.display} edits from the plain prompt; the instruction is not used"
        elif req.instruction:
            ins_id, raw = "explicit", req.instruction
        elif task_cfg is not None:
            try:
                ins, note = request_instruction(task_cfg, self.instruction_setting, req.key, self.instruction_set,
                                                self.instruction_seed)
            except ConfigError as e:
                raise RequestError(str(e)) from None
            if ins is not None:
                ins_id, raw = ins.id, ins.text
        missing = [name for slot, name, value in (("[LABEL]", "label", req.label), ("[TOPIC]", "subject", req.subject))
                   if slot in raw and not value]
        if missing:
            raise RequestError(f"{w}: instruction {ins_id!r} of task {req.task or '-'} has slots to fill: give "
                               f"{' and '.join(missing)} (ConvSent: label = positive|negative, subject = the topic)")
        tmpl_task = task_cfg or TaskConfig(name="edit", description="", sources=(), instructions=(),
                                           display_name=GENERIC_TASK)
        return with_instruction(record, tmpl_task, ins_id, raw), note

    # ------------------------------------------------------------------------- measuring
    # Every P(target) of an edit() comes from one pass of its rows through the lower blocks and,
    # before and after the edit, one packed pass through the blocks above (editor/packed.py),
    # with the LM head at the answer positions only: the edit changes only those blocks, so the
    # lower hidden states serve both sides. A probe that is token for token its request's edit
    # input shares the edit's row, and the instruction template in front of an edit input runs
    # through the lower blocks once per loaded model (SplitModel's shared-prefix cache).
    @torch.no_grad()
    def target_probs(self, prompts: list[str], targets: list[str]) -> list[list[float]]:
        """Per answer token, P(target token | prompt + earlier target tokens), on the live model."""
        b = encode_pairs(self.tokenizer, prompts, targets, row_edit=list(range(len(prompts))),
                         max_length=self.max_length).to(self.device)
        rows = _rows(b)
        lps, _ = self._score([upper_packed(self.editable.split, self._lower(rows, [()] * len(rows)))], rows)[0]
        return [lp.exp().tolist() for lp in lps]

    @torch.no_grad()
    def _lower(self, rows: list[_Row], prefixes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """Each row's hidden states entering the edited blocks, (len, d): one pass of the lower
        blocks, a row's `prefixes` (token counts) served by the split's shared-prefix cache."""
        split = self.editable.split
        stamp = lower_stamp(split)
        if stamp != self._stamp:  # the cache assumes unchanged lower blocks: another method edited them
            split.clear_shared()
            self._stamp = stamp
        lengths = [len(ids) for ids, _, _ in rows]
        input_ids = rows[0][0].new_zeros(len(rows), max(lengths))
        mask = torch.zeros_like(input_ids)
        for r, (ids, _, _) in enumerate(rows):
            input_ids[r, : len(ids)] = ids
            mask[r, : len(ids)] = 1
        hidden = split.lower(input_ids, mask, prefixes)
        return [hidden[r, :n] for r, n in enumerate(lengths)]

    @torch.no_grad()
    def continuation(self, prompt: str, max_new_tokens: int = 20) -> str:
        tok = self.tokenizer
        ids = tok(prompt, return_tensors="pt").to(self.device)
        out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    @torch.no_grad()
    def next_tokens(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        tok = self.tokenizer
        ids = tok(prompt, return_tensors="pt").to(self.device)
        return self._top(self.model(**ids).logits[0, -1], k)

    def _top(self, logits: torch.Tensor, k: int) -> list[tuple[str, float]]:
        top = torch.topk(torch.softmax(logits.float(), -1), k)
        return [(self.tokenizer.decode([i]), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]

    @torch.no_grad()
    def _score(self, passes: list[list[torch.Tensor]], rows: list[_Row], top: dict[int, int] | None = None
               ) -> list[tuple[list[torch.Tensor], dict[int, list[tuple[str, float]]]]]:
        """Per pass (the final hidden states of every row, from the upper blocks) and row: log P of
        each answer token, the LM head run at the answer positions only, for all passes at once
        (on a CPU the head costs its weight's read, ~110 MB on SmolLM2, whatever the positions).
        `top` {row: k}: also the top-k next tokens after the row's prompt (the distribution at its
        first answer position)."""
        counts = [int(am.sum()) for _, am, _ in rows]
        h = torch.cat([f[am] for finals in passes for f, (_, am, _) in zip(finals, rows)])
        ids = torch.cat([ai[am] for _, am, ai in rows] * len(passes))
        first = {}  # position (in h) of a `top` row's first answer token -> (pass, row)
        at = 0
        for k in range(len(passes)):
            for r, n in enumerate(counts):
                if top and r in top:
                    first[at] = (k, r)
                at += n
        lp, tops = [], [{} for _ in passes]
        for s in range(0, len(h), HEAD_POSITIONS):
            logits = self.editable.split.head(h[s: s + HEAD_POSITIONS])
            lp.append(losses.token_logprobs(logits, ids[s: s + HEAD_POSITIONS]))
            for j in [j for j in first if s <= j < s + HEAD_POSITIONS]:
                k, r = first[j]
                tops[k][r] = self._top(logits[j - s], top[r])
        per_row = list(torch.cat(lp).split(counts * len(passes)))
        return [(per_row[k * len(rows): (k + 1) * len(rows)], tops[k]) for k in range(len(passes))]

    def _generate(self, infos: list[RequestInfo], loc: list[LocalityProbe], after: bool, max_new_tokens: int,
                  locality_tokens: int) -> None:
        """Greedy continuations of the prompts and rephrases (max_new_tokens > 0) and of the
        locality prompts, on the live model."""
        if max_new_tokens > 0:
            for p in (p for info in infos for p in info.probes if p.kind != "edit_input"):
                text = self.continuation(p.text, max_new_tokens)
                if after:
                    p.continuation_after = text
                else:
                    p.continuation_before = text
        for p in loc:
            text = self.continuation(p.prompt, locality_tokens)
            if after:
                p.after = text
            else:
                p.before = text

    # ------------------------------------------------------------------------- editing
    def prepare(self, requests: Iterable[EditRequest] | EditRequest
                ) -> list[tuple[EditRequest, EditRecord, str]]:
        """Check and resolve every request (all before any edit): (request, record, note)."""
        reqs = [requests] if isinstance(requests, EditRequest) else list(requests)
        if not reqs:
            raise RequestError("no edit requests")
        for i, r in enumerate(reqs):
            if not isinstance(r, EditRequest):
                raise RequestError(f"request {i + 1}: expected an EditRequest, got {type(r).__name__}")
        return [(r, *self.resolve(r, i)) for i, r in enumerate(reqs)]

    def edit(self, requests: Iterable[EditRequest] | EditRequest, *, max_new_tokens: int = 0,
             top_k: int = 0, locality: Iterable[LocalityProbe] | None = None,
             locality_tokens: int = 8) -> EditResult:
        """Compute one edit per request (independently, from the unedited model), sum them into
        the model's weights in place, and measure P(target) before and after on the edit input,
        the plain prompt and each rephrase. max_new_tokens > 0 adds greedy continuations of the
        prompt and rephrases; top_k > 0 the top next tokens. Every request is checked first:
        a bad one raises RequestError and leaves the model untouched. `locality`: unrelated prompts
        (see locality_probes) whose greedy answers, `locality_tokens` long, are compared before and
        after; a changed one is flagged in the result, its manifest and the model card."""
        resolved = self.prepare(requests)
        records = [rec for _, rec, _ in resolved]
        infos = []
        for req, rec, note in resolved:
            probes = [ProbeResult("edit_input", rec.edit_input, 0.0)] if rec.edit_input != rec.prompt else []
            probes.append(ProbeResult("prompt", rec.prompt, 0.0))
            probes += [ProbeResult("rephrase", r, 0.0) for r in rec.rephrase_prompts]
            infos.append(RequestInfo(req, rec.instruction_id, rec.instruction, rec.edit_input, 0.0, probes, note))
        loc = [dataclasses.replace(p) for p in (locality or [])]  # fresh copies: the results go in them
        known = [p for p in loc if p.answer.strip()]

        # Trained editors edit from the edit input (plain for one trained without instructions);
        # untrained methods never saw an instruction, so they edit from the plain prompt.
        batch = edit_batch(records, self.tokenizer, self.max_length, instructed=self.method.trained).to(self.device)
        probes = [(e, p) for e, info in enumerate(infos) for p in info.probes]
        pb = encode_pairs(self.tokenizer, [p.text for _, p in probes] + [p.prompt for p in known],
                          [infos[e].request.target for e, _ in probes] + [p.answer for p in known],
                          row_edit=[e for e, _ in probes] + [0] * len(known), max_length=self.max_length
                          ).to(self.device)
        rows, where = _rows(batch), []  # the edit rows first; where[j]: the row of probe batch row j
        for j, row in enumerate(_rows(pb)):
            e = probes[j][0] if j < len(probes) else -1
            if e >= 0 and all(torch.equal(a, b) for a, b in zip(row, rows[e])):
                where.append(e)
            else:
                where.append(len(rows))
                rows.append(row)
        # an instructed edit row's template text before the prompt: the split's shared prefix
        prefixes = [(n,) if n else () for n in batch.instruction_len.tolist()]
        hidden = self._lower(rows, prefixes + [()] * (len(rows) - len(records)))
        stamp = self._stamp
        # top-k next tokens: the distribution at a probe's first answer position, unless its prompt
        # was cut to max_length (then asked of the whole model, before and after).
        asked = [j for j, (_, p) in enumerate(probes) if top_k > 0 and p.kind != "edit_input"]
        whole = [j for j in asked if not self._whole_prompt(probes[j][1].text, infos[probes[j][0]].request.target)]
        from_pass = [j for j in asked if j not in whole]
        top = {where[j]: top_k for j in from_pass}
        with torch.no_grad():
            finals_before = upper_packed(self.editable.split, hidden)  # scored with the post-edit pass below
        whole_before = {j: self.next_tokens(probes[j][1].text, top_k) for j in whole}
        self._generate(infos, loc, False, max_new_tokens, locality_tokens)

        edit_hidden = hidden[0].new_zeros(len(batch), batch.input_ids.shape[1], hidden[0].shape[-1])
        for e in range(len(batch)):
            edit_hidden[e, : len(hidden[e])] = hidden[e]
        with torch.enable_grad():  # locate-then-edit methods optimise; MEND's transform needs no graph
            edits = self.make_edits(batch, edit_hidden)
        handle = self.editable.apply(edits)
        try:
            if lower_stamp(self.editable.split) != stamp:  # an edit below the split: the lower states changed
                hidden = self._lower(rows, [()] * len(rows))
            with torch.no_grad():
                finals_after = upper_packed(self.editable.split, hidden)
            (before, tops_before), (after, tops_after) = self._score([finals_before, finals_after], rows, top)
            whole_after = {j: self.next_tokens(probes[j][1].text, top_k) for j in whole}
            self._fill(probes, known, where, before, {j: tops_before[where[j]] for j in from_pass}
                       | whole_before, after=False)
            for e, info in enumerate(infos):  # the pre-edit loss: mean NLL of the edit row's answer tokens
                info.pre_loss = float(-before[e].sum() / before[e].numel())
            self._fill(probes, known, where, after, {j: tops_after[where[j]] for j in from_pass}
                       | whole_after, after=True)
            self._generate(infos, loc, True, max_new_tokens, locality_tokens)
        except BaseException:
            handle.revert()
            raise
        return EditResult(self, infos, edits, handle, loc)

    @staticmethod
    def _fill(probes, known, where, lps, tops: dict[int, list], after: bool) -> None:
        """Write one side's P(target) and top-k next tokens (`tops`, by probe) into the probes and
        the locality prompts."""
        for j, (_, p) in enumerate(probes):
            tp = lps[where[j]].exp().tolist()
            joint = float(torch.tensor(tp, dtype=torch.float64).prod())
            if after:
                p.p_after, p.token_p_after = joint, tp
            else:
                p.p_before, p.token_p_before = joint, tp
            if j in tops:
                if after:
                    p.top_after = tops[j]
                else:
                    p.top_before = tops[j]
        for j, p in enumerate(known, len(probes)):
            joint = float(torch.tensor(lps[where[j]].exp().tolist(), dtype=torch.float64).prod())
            if after:
                p.p_after = joint
            else:
                p.p_before = joint

    def _whole_prompt(self, prompt: str, target: str) -> bool:
        """encode_pairs kept every token of `prompt` (it cuts over-long prompts from the left)."""
        p = len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        a = len(self.tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"])
        return p + min(a, max(1, self.max_length - 1)) <= self.max_length


# ----------------------------------------------------------------------------------------- load
def _download_run_checkpoint(run_id: str, tracking_uri: str | None) -> Path:
    """The run's `checkpoint` artifact, downloaded once into the cache (runs are immutable)."""
    from . import tracking
    from .models import cache_dir

    target = cache_dir() / "editors" / run_id
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{run_id}-"))
        try:
            tracking.download_artifacts(run_id, "checkpoint", dst=str(tmp), tracking_uri=tracking_uri)
            if not target.exists():
                os.replace(tmp, target)
        except Exception as e:  # noqa: BLE001 - mlflow raises its own exception types
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointNotFound(f"MLflow run {run_id}: cannot download its 'checkpoint' artifact from "
                                     f"{tracking.store_label(tracking_uri)}: {msg}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    # download_artifacts puts the artifact folder itself under dst: <target>/checkpoint/editor.pt.
    return target / "checkpoint" if (target / "checkpoint").is_dir() else target


def resolve_checkpoint(path_or_run: str | os.PathLike, tracking_uri: str | None = None) -> Resolved:
    """The editor checkpoint behind an editor.pt, a step folder, a training run folder (its best
    checkpoint by validation) or an MLflow run id (its `checkpoint` artifact): see
    editor/checkpoint.py. `.line()` says which and why; `.ckpt` holds its contents."""
    return resolve(path_or_run, download=lambda rid: _download_run_checkpoint(rid, tracking_uri))


def load_editor(path_or_run: str | os.PathLike, model: LoadedModel | str | torch.nn.Module | None = None, *,
                tokenizer=None, device: str | torch.device = "cpu", tracking_uri: str | None = None,
                instruction_seed: int | None = None, max_length: int = 256) -> BoundEditor:
    """A trained editor bound to its base model.

    path_or_run: an editor.pt, a step folder, a training run folder (its best checkpoint by
    validation, via best.json) or an MLflow run id (its `checkpoint` artifact); the returned
    editor's `.resolved.line()` says which checkpoint was taken. model: None = build the checkpoint's model
    from the registry; a registry name; a LoadedModel; or a Hugging Face model (with `tokenizer=`,
    described by the checkpoint's model config). Raises CheckpointMismatch if the model is not
    the one the editor was trained for."""
    found = resolve_checkpoint(path_or_run, tracking_uri)
    ckpt_path, run_id, ckpt = found.path, found.run_id, found.ckpt
    loaded: LoadedModel | None
    if model is None or isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, str):
        loaded = build_model(model, device=device)
    elif isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("load_editor: a plain model needs tokenizer=")
        from .config import ModelConfig, from_dict

        loaded = LoadedModel(from_dict(ModelConfig, ckpt["model_config"]), model.eval().requires_grad_(False),
                             tokenizer)
    else:
        raise TypeError(f"load_editor: model must be a LoadedModel, a registry name or a torch module, "
                        f"got {type(model).__name__}")
    method = methods.method_of(ckpt)
    try:
        editable, make = method.load(loaded, checkpoint=ckpt, device=device)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{ckpt_path}: {e}") from None
    except (KeyError, RuntimeError) as e:  # a model of another shape: missing modules, size mismatch
        raise CheckpointMismatch(f"{ckpt_path}: editor trained for {ckpt['model_name']!r} does not fit "
                                 f"model {loaded.config.name if loaded else ckpt['model_name']!r}: {e}") from None
    bound = BoundEditor(editable, make, method, ckpt=ckpt, checkpoint=str(ckpt_path), run_id=run_id,
                        instruction_seed=instruction_seed, max_length=max_length)
    bound.resolved = found
    return bound


def load_method(name: str, model: LoadedModel | str, *, hparams: Any = None, device: str | torch.device = "cpu",
                max_length: int = 256) -> BoundEditor:
    """An untrained editing method of the registry (ft-l, rome, memit, alphaedit, pre-edit) built
    on `model` (a registry name or a LoadedModel), ready to edit() like a trained editor.

    hparams: None for configs/methods/<name>.yaml (with its section for this model), a dict of
    overrides over it, or the method's typed hyperparameters. Locate-then-edit methods compute
    their key statistics once per model and layer (cached on disk) the first time."""
    method = methods.get(name)
    if method.trained:
        raise ValueError(f"method {name} is trained: load its checkpoint with load_editor(path_or_run)")
    loaded = build_model(model, device=device) if isinstance(model, str) else model
    hparams = method.hparams_for(loaded.config.name, hparams)  # kept: the card and manifest name them
    editable, make = method.load(loaded, hparams=hparams, device=device)
    return BoundEditor(editable, make, method, hparams=hparams, max_length=max_length)

#!/bin/bash
# Issue 14 item 2: which change makes instruction-trained edits hold on the plain question?
# Trains one InstructEdit variant for 150 steps x 8 edits (1,200 training edits) on CounterFact +
# Recent (the two NLL training tasks: plain and instructed reliability are defined there), selects
# its checkpoint by validation, and evaluates it on the whole validation splits of both tasks with
# plain and instructed probes (no generation). Run from the repository root, one variant at a time:
#   scripts/instruction_variants.sh base --set editor.rephrase_in_edit_loss=false
#   scripts/instruction_variants.sh outer --set editor.rephrase_in_edit_loss=true    (today's default)
#   scripts/instruction_variants.sh input --set editor.rephrase_in_edit_loss=false --set editor.edit_tokens=input
#   scripts/instruction_variants.sh dropout --set editor.rephrase_in_edit_loss=false --set train.instruction_dropout=0.5
# then: instructedit evaluate --compare-table evals/instruction-variants
# (table.md: each variant's plain and instructed metrics and its instructed - plain gap, paired).
# A variant whose evaluation exists is skipped; an interrupted training resumes.
set -euo pipefail
v=${1:?usage: scripts/instruction_variants.sh NAME [--set key=value ...]}
shift
out=evals/instruction-variants/$v
if [ -f "$out/cases.parquet" ]; then echo "[$v] evaluated already: $out"; exit 0; fi
bin=${INSTRUCTEDIT:-.venv/bin/instructedit}
latest() { ls -td runs/iv-$v-2* 2>/dev/null | head -1; }
if [ ! -f "$(latest)/best.json" ] || [ ! -f "$(latest)/.trained" ]; then
  resume=(); [ -n "$(latest)" ] && resume=(--resume)
  "$bin" train --config instructedit-smollm2 --set name=iv-$v --set experiment=instruction-variants \
    --set train.max_steps=150 --set "data.tasks=[counterfact,recent]" "$@" "${resume[@]}"
  touch "$(latest)/.trained"
fi
"$bin" evaluate --editor "$(latest)" --label "$v" --split val --tasks counterfact recent --no-generation \
  --experiment instruction-variants --out "$out"

#!/usr/bin/env bash
# One small CoCoS run at temperature 0.9, before and after the on-policy fix, same
# config and seed. "before" is commit 5081892 (log-probs under softmax(logits)); "after" is this checkout
# (softmax(logits / 0.9)). Extraction is lenient in both (the old code's rule), so the temperature fix is
# the only difference. Run from the repository root with the venv active:
#   bash docs/results/onpolicy_t09/run.sh            # ~30 min on 2 cores
set -euo pipefail
OUT="${OUT:-runs/onpolicy_t09}"
BEFORE_REV="${BEFORE_REV:-5081892}"
mkdir -p "$OUT"
if [ ! -d "$OUT/before_src" ]; then
  git worktree add --detach "$OUT/before_src" "$BEFORE_REV" >/dev/null
fi
# Small on purpose: 4 curriculum-kept problems x k 4 x 2 turns per step (every group has a reward difference
# at the start, so most steps train), 128 new tokens, micro-batches of 2 (two 3-shot runs of micro-batch 4 side
# by side were OOM-killed on 24 GB); one thread each, side by side.
COMMON=(--config configs/cocos_cpu.yaml --set max_steps=3 --set problems_per_step=4 --set curriculum_k=4
        --set train_limit=12 --set max_new_tokens=128 --set micro_batch=2 --set eval_at_start=true
        --set eval_every=0 --set eval_limit=10 --set eval_max_new_tokens=128 --set save_every=0 --set seed=0
        --set temperature=0.9)
export COCOS_DATA_DIR="${COCOS_DATA_DIR:-../shared/data}" OMP_NUM_THREADS=1
done3() { [ -f "$1/log.jsonl" ] && [ "$(wc -l < "$1/log.jsonl")" -ge 3 ]; }  # a finished run is kept
done3 "$OUT/before" || { rm -rf "$OUT/before"
  PYTHONPATH="$OUT/before_src/src" python -m cocos.cli train "${COMMON[@]}" --out "$OUT/before" > "$OUT/before.log" 2>&1 & }
done3 "$OUT/after" || { rm -rf "$OUT/after"
  python -m cocos.cli train "${COMMON[@]}" --set extraction=lenient --out "$OUT/after" > "$OUT/after.log" 2>&1 & }
wait
python docs/results/onpolicy_t09/summarize.py "$OUT" docs/results/onpolicy_t09

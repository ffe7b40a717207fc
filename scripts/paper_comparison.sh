#!/usr/bin/env bash
# The paper's comparison at a chosen budget: 8 methods evaluated on the same MBPP test problems,
# then `cocos report`. Every step writes its own run folder and is skipped when that folder is
# already complete, so a stopped run picks up where it stopped.
#
#   BUDGET=tiny  bash scripts/paper_comparison.sh   # minutes: checks every step works, numbers mean nothing
#   BUDGET=small bash scripts/paper_comparison.sh   # ~1-2 h on a 2-core CPU: a first look
#   BUDGET=paper bash scripts/paper_comparison.sh   # the configs' own settings (GPU)
#
# Knobs (environment): BUDGET, OUT (run folders, default runs/paper_$BUDGET), BOOST (an existing boost
# model folder to reuse instead of training one), N_EVAL, RL_STEPS, NICE (prefix, default "nice -n 10").
#
# Methods:
#   base          the packaged base model, 3-shot (it does not follow the format zero-shot)
#   boost         base + SFT on KodCode (configs/boost_sft.yaml), zero-shot from here on
#   self-refine   boost, feedback then revision (configs/self_refine.yaml)
#   turn-sft      boost + SFT on its own wrong MBPP-train first turns (configs/turn_sft.yaml)
#   score         boost + SCoRe (configs/score.yaml)
#   cocos         boost + CoCoS, progressive reward, gamma 0.5 (configs/cocos_gamma0.5.yaml)
#   cocos-binary  boost + CoCoS, binary reward (configs/cocos_binary.yaml)
#   cocos-gamma0  boost + CoCoS, gamma 0 (configs/cocos_gamma0.yaml)
# RL runs are evaluated by the trainer itself on the same problems (eval_split=test, eval_limit=N_EVAL),
# so their folders carry the learning curves and the final numbers both.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cocos >/dev/null && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
command -v cocos >/dev/null || { echo "cocos is not installed: pip install -e . (or activate the venv)" >&2; exit 2; }

BUDGET="${BUDGET:-small}"
case "$BUDGET" in
  tiny)
    : "${N_EVAL:=3}" "${RL_STEPS:=2}"
    TOKENS=48; EVAL_TOKENS=48
    SFT_SET=(--set max_rows=70 --set max_steps=2 --set batch_size=2 --set grad_accum=1 --set max_length=512)
    TSFT_SET=(--set max_rows=4 --set turn_sft_samples=1 --set max_steps=1 --set batch_size=2 --set grad_accum=1 --set max_new_tokens=48)
    RL_SET=(--set problems_per_step=2 --set k=2 --set micro_batch=4 --set eval_every=0 --set save_every=0 --set score_stage1_steps=1
            --set skip_uniform_groups=true)
    ;;
  small)
    : "${N_EVAL:=30}" "${RL_STEPS:=10}"
    TOKENS=192; EVAL_TOKENS=256
    SFT_SET=(--set epochs=2 --set max_length=768 --set batch_size=4 --set grad_accum=2 --set lr=5e-5)
    TSFT_SET=(--set max_rows=96 --set turn_sft_samples=1 --set turn_sft_temperature=0.0 --set epochs=2 --set max_new_tokens=256)
    RL_SET=(--set problems_per_step=8 --set k=4 --set eval_every=5 --set save_every=0 --set score_stage1_steps=5
            --set skip_uniform_groups=true --set micro_batch=4)  # micro_batch 4: half the peak memory of 8 (~11 GB)
    ;;
  paper)
    : "${N_EVAL:=500}" "${RL_STEPS:=60}"
    TOKENS=512; EVAL_TOKENS=512
    SFT_SET=(); TSFT_SET=(); RL_SET=(--set problems_per_step=128 --set k=2 --set eval_every=10)
    ;;
  *) echo "BUDGET must be tiny, small or paper (got $BUDGET)" >&2; exit 2 ;;
esac
OUT="${OUT:-runs/paper_$BUDGET}"
NICE="${NICE:-nice -n 10}"
export COCOS_DATA_DIR="${COCOS_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
LOG="$OUT/commands.log"
# rollout dtype "auto" everywhere (bf16 where the CPU has AMX): the trainer evaluates its RL runs with its
# rollout engine, so the eval-only methods use the same one and every row of the table is comparable.
EVAL=(--dataset mbpp --split test --limit "$N_EVAL" --turns 2 --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto)

run() {  # run CMD..., appending it to $OUT/commands.log
  echo "+ $*" | tee -a "$LOG"
  $NICE "$@"
}
done_eval() { [ -f "$1/metrics.json" ]; }
done_train() { compgen -G "$1/eval/step_*/metrics.json" >/dev/null && [ -d "$1/checkpoints" ]; }

# 1. base model, 3-shot
done_eval "$OUT/base" || run cocos eval --model smollm2-135m --fewshot "${EVAL[@]}" --out "$OUT/base"

# 2. boost model (SFT), then its evaluation
if [ -n "${BOOST:-}" ]; then
  BOOST_DIR="$BOOST"
else
  BOOST_DIR="$OUT/boost_model"
  [ -f "$BOOST_DIR/model.safetensors" ] || run cocos sft --config configs/boost_sft.yaml --out "$BOOST_DIR" "${SFT_SET[@]}"
fi
done_eval "$OUT/boost" || run cocos eval --model "$BOOST_DIR" "${EVAL[@]}" --out "$OUT/boost"

# 3. Self-Refine on the boost model
done_eval "$OUT/self_refine" || run python -m cocos.selfrefine --config configs/self_refine.yaml --out "$OUT/self_refine" \
  --set model="$BOOST_DIR" --set limit="$N_EVAL" --set max_new_tokens="$EVAL_TOKENS" --set feedback_tokens="$EVAL_TOKENS" \
  --set rollout_dtype=auto

# 4. Turn-SFT on the boost model's own wrong first turns (MBPP train)
[ -f "$OUT/turn_sft_model/model.safetensors" ] || run cocos sft --config configs/turn_sft.yaml --out "$OUT/turn_sft_model" \
  --set model="$BOOST_DIR" "${TSFT_SET[@]}"
done_eval "$OUT/turn_sft" || run cocos eval --model "$OUT/turn_sft_model" "${EVAL[@]}" --out "$OUT/turn_sft"

# 5-8. RL from the boost model: SCoRe and three CoCoS variants, evaluated by the trainer on the same problems
RL_COMMON=(--set model="$BOOST_DIR" --set fewshot=false --set rollout_dtype=auto --set max_steps="$RL_STEPS" --set max_new_tokens="$TOKENS"
           --set eval_split=test --set eval_limit="$N_EVAL" --set eval_max_new_tokens="$EVAL_TOKENS" "${RL_SET[@]}")
for pair in score:configs/score.yaml cocos_g0.5:configs/cocos_gamma0.5.yaml \
            cocos_binary:configs/cocos_binary.yaml cocos_g0:configs/cocos_gamma0.yaml; do
  name="${pair%%:*}"; cfg="${pair#*:}"
  done_train "$OUT/$name" || run cocos train --config "$cfg" --out "$OUT/$name" "${RL_COMMON[@]}"
done

# Report
run cocos report "$OUT/base" "$OUT/boost" "$OUT/self_refine" "$OUT/turn_sft" "$OUT/score" "$OUT/cocos_g0.5" \
  "$OUT/cocos_binary" "$OUT/cocos_g0" --out "$OUT/report" \
  --label "Base (3-shot)" --label "Boost" --label "Self-Refine" --label "Turn-SFT" --label "SCoRe" \
  --label "CoCoS (γ=0.5)" --label "CoCoS binary" --label "CoCoS γ=0" \
  --title "CoCoS comparison, budget $BUDGET ($N_EVAL MBPP test problems)"
echo "report: $OUT/report/report.md"

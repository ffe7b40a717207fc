#!/usr/bin/env bash
# Per-turn credit against trajectory RLOO in training (docs/credit.md): the paper's unstable gamma = 2 with both
# estimators over SEEDS, and three turns (the paper's open question 1) with both, then the three-turn models on
# held-out MBPP test problems. One resumable queue: two invocations (one per core) share the jobs.
#
#   BUDGET=tiny DRY_RUN=1 bash scripts/credit.sh          # print every command, run nothing
#   OMP_NUM_THREADS=1 bash scripts/credit.sh & sleep 5; OMP_NUM_THREADS=1 bash scripts/credit.sh; wait
#   PUBLISH=docs/results/credit/training bash scripts/credit.sh    # the page, its plots and the numbers behind it
#
# Jobs (OUT = runs/credit_<budget> unless set), every run from MODEL, zero-shot, on CURRICULUM's problems:
#   train g2_ESTIMATOR_sSEED   trajectory mode, gamma 2, 2 turns, STEPS steps (ESTIMATOR: rloo | per_turn)
#   train t3_ESTIMATOR_s0      trajectory mode, gamma 0.5, 3 turns, all turns trained
#   eval  base | t3_*          greedy, 3 turns, the first N_HELDOUT MBPP test problems: acc@t per turn
# MODEL and CURRICULUM default to scripts/self_correction.sh's new boost model and its partial-rule curriculum.
#
# Knobs (environment): BUDGET tiny | cpu; SEEDS (cpu "0 1 2"); STEPS (cpu 15); N_HELDOUT (cpu 100); MODEL;
# CURRICULUM; OUT; PUBLISH; DRY_RUN; SITTING_MINUTES; NICE (default "nice -n 15").
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_lib.sh  # show, run, sitting_over, has_model, need_cocos, run_env; the queue: claim, release, ...
need_cocos

BUDGET="${BUDGET:-cpu}"
case "$BUDGET" in
  tiny) : "${SEEDS:=0 1}" "${STEPS:=2}" "${N_HELDOUT:=3}"
        COMMON=(train_limit=8 problems_per_step=2 k=2 micro_batch=4 max_new_tokens=48); EVAL_TOKENS=48 ;;
  # configs/cocos_cpu.yaml with 4 problems a step instead of 8 (k 4, 192 tokens a turn, lr 2e-5): ~35 s a step at
  # two turns and ~55 s at three on one core, so that the 8 runs fit one sitting of two cores
  cpu) : "${SEEDS:=0 1 2}" "${STEPS:=15}" "${N_HELDOUT:=100}"
       COMMON=(problems_per_step=4); EVAL_TOKENS=256 ;;
  *) echo "BUDGET must be tiny or cpu (got $BUDGET)" >&2; exit 2 ;;
esac
OUT="${OUT:-runs/credit_$BUDGET}"
MODEL="${MODEL:-runs/self_correction_cpu/boost_new}"
CURRICULUM="${CURRICULUM:-$(dirname "$MODEL")/curriculum/curriculum.json}"
DRY_RUN="${DRY_RUN:-0}"
SITTING_MINUTES="${SITTING_MINUTES:-0}"
NICE="${NICE:-nice -n 15}"
run_env
STARTED=$(date +%s)
LOG="$OUT/commands.log"
if [ "$DRY_RUN" != 1 ]; then
  has_model "$MODEL" || { echo "MODEL=$MODEL holds no model: run scripts/self_correction.sh first (its boost_new)," \
                               "or set MODEL to a checkpoint folder" >&2; exit 2; }
  [ -f "$CURRICULUM" ] || { echo "CURRICULUM=$CURRICULUM does not exist: set it to a curriculum.json" \
                                 "(python -m cocos.rl.curriculum SAMPLES.jsonl --out curriculum.json)" >&2; exit 2; }
  mkdir -p "$OUT"
fi
LOCKS="$OUT/locks"
read -r -a SEED_LIST <<<"$SEEDS"

JOBS=()
for seed in "${SEED_LIST[@]}"; do for est in rloo per_turn; do JOBS+=("train g2_${est}_s$seed"); done; done
for est in rloo per_turn; do JOBS+=("train t3_${est}_s0"); done
JOBS+=("eval base")
for est in rloo per_turn; do JOBS+=("eval t3_${est}_s0"); done

job_done() {  # job_done KIND NAME
  case "$1" in
    train) [ -f "$OUT/train/$2/checkpoints/step_$STEPS/trainer_state.pt" ] ;;
    eval) [ -f "$OUT/eval/$2/metrics.json" ] ;;
  esac
}
job_ready() { [ "$1" = train ] || [ "$2" = base ] || job_done train "$2"; }

train_job() {  # train_job g2_ESTIMATOR_sSEED | t3_ESTIMATOR_sSEED
  local name=$1 dir="$OUT/train/$1" seed=${1##*_s} est=${1#*_}; est=${est%_s*}
  local shape; case "$name" in g2_*) shape=(turns=2 gamma=2.0) ;; t3_*) shape=(turns=3 gamma=0.5) ;; esac
  local args=(train --config configs/cocos_cpu.yaml --out "$dir" --no-progress) s
  local sets=(model="$MODEL" fewshot=false seed="$seed" max_steps="$STEPS" curriculum_k=4 curriculum_from="$CURRICULUM"
              eval_limit=0 save_every="$STEPS" save_total_limit=1 mode=trajectory train_turns=all
              advantage="${est//_/-}" "${shape[@]}" "${COMMON[@]}")
  for s in "${sets[@]}"; do args+=(--set "$s"); done
  if compgen -G "$dir/checkpoints/step_*/trainer_state.pt" >/dev/null; then args+=(--resume)
  elif [ -d "$dir" ] && [ "$DRY_RUN" != 1 ]; then rm -rf "$dir"; fi  # a run that saved nothing starts again
  run cocos "${args[@]}"
}

eval_job() {  # eval_job base | t3_ESTIMATOR_s0
  local model="$MODEL"; [ "$1" = base ] || model="$OUT/train/$1/checkpoints/step_$STEPS"
  run cocos eval --model "$model" --dataset mbpp --split test --limit "$N_HELDOUT" --turns 3 --temperature 0 \
    --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto --out "$OUT/eval/$1"
}

echo "# credit: BUDGET=$BUDGET SEEDS='$SEEDS' STEPS=$STEPS N_HELDOUT=$N_HELDOUT MODEL=$MODEL OUT=$OUT"
while :; do
  new_pass
  for job in "${JOBS[@]}"; do
    read -r kind name <<<"$job"
    if job_done $job; then echo "= done, skipped: $job"; continue; fi
    if [ "$DRY_RUN" != 1 ] && ! job_ready $job; then WAITING+=("$job"); continue; fi
    claim "${job// /_}" || continue
    if job_done $job; then release; continue; fi  # another invocation finished it meanwhile
    sitting_over
    "${kind}_job" "$name"
    release
  done
  next_pass || break
done

one_at_a_time report
run python -m cocos.eval.report_credit "$OUT" --out "$OUT/page" --budget "$BUDGET: $(basename "$MODEL") from \
$MODEL, zero-shot, trajectory mode, $STEPS steps of configs/cocos_cpu.yaml with ${COMMON[*]} on $CURRICULUM; \
seeds $SEEDS at gamma 2 (2 turns), seed 0 at 3 turns (gamma 0.5); held-out: greedy, 3 turns, $EVAL_TOKENS tokens \
a turn, the first $N_HELDOUT MBPP test problems"
if [ -n "${PUBLISH:-}" ]; then  # the page, its plots and the numbers behind it (no checkpoints, no samples)
  run mkdir -p "$PUBLISH/runs"
  run cp -r "$OUT/page/." "$OUT/commands.log" "$PUBLISH/"
  if [ "$DRY_RUN" != 1 ]; then
    (cd "$OUT" && find . \( -path ./locks -o -name checkpoints -o -name tensorboard \) -prune -o -type f \
      \( -name metrics.json -o -name config.json -o -name config.yaml -o -name log.jsonl \) -print) |
      while read -r f; do mkdir -p "$PUBLISH/runs/$(dirname "$f")"; cp "$OUT/$f" "$PUBLISH/runs/$f"; done
  fi
fi

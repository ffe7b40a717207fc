#!/usr/bin/env bash
# The paper's four claims checked on the default model (SmolLM2-135M), with seeds and standard errors (docs/claims.md).
# One script, every run reproducible from its seed; each step writes its own folder and is skipped when done, so a
# stopped run picks up where it stopped (a training run with a checkpoint continues with --resume).
#
#   BUDGET=tiny nice -n 15 bash scripts/claims.sh            # proves the plumbing: minutes
#   BUDGET=cpu SITTING_MINUTES=240 PUBLISH=docs/results/claims bash scripts/claims.sh   # the real plan, 4 h a sitting
#   BUDGET=cpu DRY_RUN=1 bash scripts/claims.sh              # print every command, run nothing
#   # two cores: the same command twice, one thread each; the invocations share one queue of jobs (see 2-3)
#   bash scripts/claims.sh & sleep 5; bash scripts/claims.sh; wait; PUBLISH=docs/results/claims bash scripts/claims.sh
#
# Every run starts from the boost model, zero-shot, as the paper's methods do (on the base model, 3-shot, MBPP rewards
# are too sparse to move: a first try's gamma-0 run earned 0.001 mean reward by step 14).
#
# What runs (OUT = runs/claims_<budget> unless set):
#   0. the boost model (BOOST): configs/boost_sft.yaml with the settings of scripts/paper_comparison.sh at the same
#      budget (small for cpu), so the comparison's boost model can be passed as BOOST and is the same model.
#   1. OUT/curriculum: the starting model samples CURRICULUM_K turn-1 answers per MBPP-train problem (seed
#      CURRICULUM_SEED, once); the problems whose answers earned different rewards are kept (curriculum.json).
#      Every run below trains on those same problems (curriculum_from), whatever its seed or method.
#   2. OUT/train/<run>_s<seed>, for each seed in SEEDS: the gamma sweep g0 g0.5 g1 g2 (configs/cocos_gamma*.yaml),
#      binary (configs/cocos_binary.yaml: gamma 0.5, binary reward) and score (configs/score.yaml, SCoRe), all with
#      the same budget (STEPS steps, the config's 8 problems x k 4 x 2 turns per step at the cpu budget). g0.5 is
#      CoCoS as the paper runs it: the progressive arm of claim 2 and the CoCoS arm of claims 3-4.
#   3. OUT/eval/<run>_s<seed>/<dataset>: the final checkpoints of g0.5, binary and score, greedy, 2 turns, zero-shot
#      (as they train), on the first N_EVAL problems of MBPP test and ODEX.
#   4. scripts/claims_report.py: OUT/claims.md (one section per claim: plot, table with mean ± SE over seeds, verdict
#      by the rule written on the page) and its plots.
#
# Knobs (environment):
#   BUDGET     tiny | cpu (default cpu)
#   SEEDS      training seeds (tiny "0 1", cpu "0 1 2")
#   STEPS      steps of every training run (tiny 2, cpu 30)
#   N_EVAL     first N problems of MBPP test and of ODEX (tiny 3, cpu 200)
#   OUT        output folder (default runs/claims_<budget>)
#   BOOST      an existing boost model folder (e.g. runs/comparison_small-smollm2-135m/boost_model, made by the same
#              command); default OUT/boost_model, trained here. OUT/boost_model.txt keeps the first call's choice:
#              later calls need no BOOST, and refuse a different one
#   SITTING_MINUTES  stop this invocation after about this many minutes (0 = no limit): each training run gets the
#              time left as max_minutes, stops after the step that passes it, checkpoints, and the script exits;
#              rerun the same command to continue (nothing already done runs again)
#   PRUNE      1 (default): once a run is finished drop its optimizer state (trainer_state.pt, ~1.1 GB), and the
#              weights of the runs that are not evaluated (~0.5 GB); 18 full checkpoints would need ~29 GB
#   PUBLISH    a folder (e.g. docs/results/claims) to copy claims.md, its plots, commands.log and the numbers behind
#              the page (runs/: training logs, evaluation metrics) into at the end
#   DRY_RUN    1: print every command, run nothing
#   NICE       prefix of every command (default "nice -n 15")
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_lib.sh  # show, run, sitting_over, has_model, need_cocos, run_env; the queue: claim, release, ...
need_cocos

# The published pages' boost data (one-line mutants of the reference, half of the second turns keep the reference;
# KodCode only): configs/boost_sft.yaml now samples the model's own wrong answers and adds MBPP train.
OLD_BOOST_DATA=(--set wrong_answers=mutants --set fix_fraction=0.5 --set mbpp_train=false)
BUDGET="${BUDGET:-cpu}"
case "$BUDGET" in
  tiny)
    : "${SEEDS:=0 1}" "${STEPS:=2}" "${N_EVAL:=3}"
    CURRICULUM_K=2; EVAL_TOKENS=48
    # 8 MBPP-train problems, 2 problems x k 2 x 48 tokens per step: ~30 s a run (measured, busy 2-core CPU)
    COMMON=(train_limit=8 problems_per_step=2 k=2 micro_batch=4 max_new_tokens=48)
    SFT_SET=("${OLD_BOOST_DATA[@]}" --set max_rows=70 --set max_steps=2 --set batch_size=2 --set grad_accum=1 --set max_length=512)
    ;;
  cpu)
    : "${SEEDS:=0 1 2}" "${STEPS:=30}" "${N_EVAL:=200}"
    CURRICULUM_K=4; EVAL_TOKENS=256
    COMMON=()  # the configs as they are: 8 problems x k 4 x 2 turns, 192 tokens per turn, lr 2e-5
    SFT_SET=("${OLD_BOOST_DATA[@]}" --set epochs=2 --set max_length=768 --set batch_size=4 --set grad_accum=2 --set lr=5e-5)  # comparison: small
    ;;
  *) echo "BUDGET must be tiny or cpu (got $BUDGET)" >&2; exit 2 ;;
esac
OUT="${OUT:-runs/claims_$BUDGET}"
DRY_RUN="${DRY_RUN:-0}"
PRUNE="${PRUNE:-1}"
SITTING_MINUTES="${SITTING_MINUTES:-0}"
NICE="${NICE:-nice -n 15}"
CURRICULUM_SEED="${CURRICULUM_SEED:-0}"
SAVE_EVERY=$(( STEPS >= 20 ? 10 : 0 ))  # a crash loses at most 10 steps; max_minutes stops checkpoint anyway
SCORE_STAGE1=$(( STEPS / 3 > 0 ? STEPS / 3 : 1 ))  # configs/score.yaml: stage I 10 of 30 steps
run_env
STARTED=$(date +%s)
LOG="$OUT/commands.log"
if [ "$DRY_RUN" != 1 ]; then mkdir -p "$OUT"; fi

RUNS=(g0 g0.5 g1 g2 binary score)
EVALUATED=(g0.5 binary score)
DATASETS=(mbpp odex)
config_of() {
  case "$1" in
    g0|g0.5|g1|g2) echo "configs/cocos_gamma${1#g}.yaml" ;;
    binary) echo configs/cocos_binary.yaml ;;
    score) echo configs/score.yaml ;;
  esac
}
evaluated() { [[ " ${EVALUATED[*]} " == *" $1 "* ]]; }
read -r -a SEED_LIST <<<"$SEEDS"
NS=${#SEED_LIST[@]}

# ---- the plan and its cost ------------------------------------------------------------------------
# cpu estimate from measured costs on this 2-core machine, one thread per job beside another job, from the boost
# model, zero-shot: a step of 8 problems x k 4 takes ~125 s with the progressive reward (gamma runs: 60-75% of the
# groups train; medians 119-129 s over four runs) and ~70 s with the binary one (binary, SCoRe: ~30% train; medians
# 62-66 s), + ~40 s of load and save per run; the curriculum 7 min (374 problems x 4 answers); an evaluation ~1.2 s
# per problem (200 problems x 2 turns, zero-shot, 256 tokens: 167-250 s). Two invocations side by side halve the
# wall time; each job peaks near 11 GB of memory.
# In seconds: a step (progressive, binary reward), a run's load and save, an evaluation, the curriculum.
if [ "$BUDGET" = cpu ]; then
  STEP_S=125; STEP_BIN_S=70; RUN_S=40; EVAL_S=$(( N_EVAL * 6 / 5 )); CURRICULUM_S=420
else  # tiny: a whole run ~35 s
  STEP_S=0; STEP_BIN_S=0; RUN_S=35; EVAL_S=40; CURRICULUM_S=60
fi
last_saved_step() {  # the step of a run folder's newest checkpoint (0: none)
  local d n=0; for d in "$1"/checkpoints/step_*; do [ -d "$d" ] && [ "${d##*step_}" -gt "$n" ] && n=${d##*step_}; done
  echo "$n"
}
est_all=$CURRICULUM_S; est_left=0
[ -f "$OUT/curriculum/curriculum.json" ] || est_left=$CURRICULUM_S
for name in "${RUNS[@]}"; do
  case "$name" in binary|score) step_s=$STEP_BIN_S ;; *) step_s=$STEP_S ;; esac
  for seed in "${SEED_LIST[@]}"; do
    dir="$OUT/train/${name}_s$seed"
    est_all=$(( est_all + STEPS * step_s + RUN_S ))
    [ -f "$dir/FINISHED" ] || est_left=$(( est_left + (STEPS - $(last_saved_step "$dir")) * step_s + RUN_S ))
    if evaluated "$name"; then for ds in "${DATASETS[@]}"; do
      est_all=$(( est_all + EVAL_S ))
      [ -f "$OUT/eval/${name}_s$seed/$ds/metrics.json" ] || est_left=$(( est_left + EVAL_S ))
    done; fi
  done
done
hm() { echo "$(( $1 / 3600 )) h $(( $1 % 3600 / 60 )) min"; }
echo "# the paper's claims: BUDGET=$BUDGET SEEDS='$SEEDS' STEPS=$STEPS N_EVAL=$N_EVAL OUT=$OUT"
echo "# runs: curriculum once (k=$CURRICULUM_K, seed $CURRICULUM_SEED); ${#RUNS[@]} training runs x $NS seeds = $((6 * NS))" \
     "(${RUNS[*]}), $STEPS steps each; evals: ${EVALUATED[*]} x $NS seeds x ${DATASETS[*]}, first $N_EVAL problems"
echo "# estimated time of one core (on a busy 2-core CPU): ~$(hm $est_all) in all; ~$(hm $est_left) left (finished" \
     "jobs and checkpointed steps are skipped; two invocations share it)"


# Steps 0 and 1 are shared by every seed: a second invocation beside this one (other SEEDS) waits here for them
LOCKS="$OUT/locks"  # the locks of the setup, the queue and the report (scripts/_lib.sh)
one_at_a_time setup

# ---- 0. the boost model: every run below starts from it, zero-shot -----------------------------------
# OUT/boost_model.txt remembers the starting model of the first call: later calls use it, and refuse another one
# (the curriculum and every run must start from the same model)
STARTED_FROM="$OUT/boost_model.txt"
if [ -f "$STARTED_FROM" ]; then
  if [ -n "${BOOST:-}" ] && [ "$BOOST" != "$(cat "$STARTED_FROM")" ]; then
    echo "BOOST=$BOOST: $OUT started from $(cat "$STARTED_FROM") ($STARTED_FROM); leave BOOST unset, or choose another OUT" >&2
    exit 2
  fi
  BOOST="$(cat "$STARTED_FROM")"
fi
if [ -n "${BOOST:-}" ]; then
  if [ "$DRY_RUN" != 1 ] && ! has_model "$BOOST"; then
    echo "BOOST=$BOOST: no model*.safetensors there (give a finished boost model folder, or leave BOOST unset)" >&2; exit 2
  fi
  echo "= the boost model: $BOOST (BOOST)"
else
  BOOST="$OUT/boost_model"
  if has_model "$BOOST"; then
    echo "= done, skipped: boost model ($BOOST)"
  else
    sitting_over
    resume=(); if compgen -G "$BOOST/checkpoints/checkpoint-*" >/dev/null; then resume=(--set resume=true); fi
    run cocos sft --config configs/boost_sft.yaml --out "$BOOST" --set model=smollm2-135m "${SFT_SET[@]}" \
      --set save_steps=20 "${resume[@]}"
  fi
fi
START=(model="$BOOST" fewshot=false)
[ "$DRY_RUN" = 1 ] || echo "$BOOST" > "$STARTED_FROM"

# ---- 1. the curriculum, once ------------------------------------------------------------------------
CUR="$OUT/curriculum"
if [ -f "$CUR/curriculum.json" ]; then
  echo "= done, skipped: curriculum ($CUR/curriculum.json)"
else
  sitting_over
  [ "$DRY_RUN" = 1 ] || rm -rf "$CUR"  # a half-made one (no curriculum.json) starts over
  set_args=(--set max_steps=0 --set curriculum_k="$CURRICULUM_K" --set seed="$CURRICULUM_SEED" --set eval_limit=0)
  for s in "${START[@]}" "${COMMON[@]}"; do set_args+=(--set "$s"); done
  run cocos train --config configs/cocos_cpu.yaml --out "$CUR" --no-progress "${set_args[@]}"
  [ "$DRY_RUN" = 1 ] || rm -rf "$CUR/checkpoints"  # max_steps=0 saves the starting model: not needed
fi

[ "$DRY_RUN" = 1 ] || exec 9>&-  # the setup is done: release it

# ---- 2-3. training runs and held-out evaluations, as one queue ---------------------------------------
# The queue is ordered by what the claims need first, so that a plan cut short still answers most of them: gamma 0
# and 0.5 (claim 1), binary and SCoRe (claims 2-3), the evaluations (claims 2-4), then gamma 1 and 2 (the rest of the
# sweep). A job holds OUT/locks/<job>.lock while it runs (its process inherits the lock), so several invocations (one
# per core) share the queue: each skips what another holds and takes the next free job; an evaluation waits for its
# training run. When only held jobs are left, an invocation waits for them, then writes the page.
JOBS=()
for name in g0 g0.5 binary score; do for seed in "${SEED_LIST[@]}"; do JOBS+=("train $name $seed"); done; done
for seed in "${SEED_LIST[@]}"; do for name in "${EVALUATED[@]}"; do for ds in "${DATASETS[@]}"; do
  JOBS+=("eval $name $seed $ds"); done; done; done
for name in g1 g2; do for seed in "${SEED_LIST[@]}"; do JOBS+=("train $name $seed"); done; done

job_done() {  # job_done KIND NAME SEED [DATASET]
  if [ "$1" = train ]; then [ -f "$OUT/train/${2}_s$3/FINISHED" ]; else [ -f "$OUT/eval/${2}_s$3/$4/metrics.json" ]; fi
}

STOPPED=0  # set by train_job when its run stopped at max_minutes (a flag, not a status: set -e must hold inside)
train_job() {  # train_job NAME SEED: run (or resume) one training run
  local name=$1 seed=$2 dir="$OUT/train/${1}_s$2" s
  local args=(train --config "$(config_of "$name")" --out "$dir" --no-progress)
  local sets=(seed="$seed" max_steps="$STEPS" curriculum_k="$CURRICULUM_K" curriculum_from="$CUR/curriculum.json"
              eval_limit=0 save_every="$SAVE_EVERY" save_total_limit=1 "${START[@]}" "${COMMON[@]}")
  if [ "$name" = score ]; then sets+=(score_stage1_steps="$SCORE_STAGE1"); fi
  if [ "$SITTING_MINUTES" != 0 ]; then sets+=(max_minutes="$(minutes_left)"); fi
  for s in "${sets[@]}"; do args+=(--set "$s"); done
  if compgen -G "$dir/checkpoints/step_*/trainer_state.pt" >/dev/null; then
    args+=(--resume)
  elif [ -d "$dir" ] && [ "$DRY_RUN" != 1 ]; then
    echo "# $dir: no checkpoint to resume from: starting it again"; rm -rf "$dir"
  fi
  run cocos "${args[@]}"
  [ "$DRY_RUN" = 1 ] && return 0
  if [ ! -f "$dir/checkpoints/step_$STEPS/trainer_state.pt" ]; then
    echo "# $dir stopped before step $STEPS (max_minutes): rerun the same command to continue"; STOPPED=1; return 0
  fi
  date -u +%FT%TZ > "$dir/FINISHED"
  if [ "$PRUNE" = 1 ]; then
    if evaluated "$name"; then rm -f "$dir/checkpoints/step_$STEPS/trainer_state.pt"; else rm -rf "$dir/checkpoints"; fi
  fi
}

eval_job() {  # eval_job NAME SEED DATASET
  run cocos eval --model "$OUT/train/${1}_s$2/checkpoints/step_$STEPS" --dataset "$3" --split test \
    --limit "$N_EVAL" --turns 2 --temperature 0 --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto \
    --out "$OUT/eval/${1}_s$2/$3"
}

while :; do
  new_pass
  for job in "${JOBS[@]}"; do
    read -r kind name seed ds <<<"$job"
    if job_done $job; then echo "= done, skipped: $kind $name seed $seed${ds:+ $ds}"; continue; fi
    if [ "$DRY_RUN" != 1 ] && [ "$kind" = eval ] && ! job_done train "$name" "$seed"; then WAITING+=("$job"); continue; fi
    claim "${job// /_}" || continue
    if job_done $job; then release; continue; fi  # another invocation finished it meanwhile
    "${kind}_job" "$name" "$seed" $ds
    [ "$STOPPED" = 0 ] || exit 0  # a training run stopped at max_minutes: the sitting is over
    release
  done
  next_pass || break
done

# ---- 4. the report --------------------------------------------------------------------------------------
one_at_a_time report
run python scripts/claims_report.py "$OUT" --seeds "$SEEDS" ${PUBLISH:+--publish "$PUBLISH"} \
  --budget "$BUDGET: the boost model of SmolLM2-135M ($BOOST), zero-shot, seeds $SEEDS, $STEPS steps per run ($( [ "$BUDGET" = tiny ] && echo "2 problems x k 2, 48 tokens, 8 MBPP-train problems before the curriculum" || echo "8 problems x k 4 x 2 turns, 192 tokens")), curriculum k=$CURRICULUM_K seed $CURRICULUM_SEED, held-out: first $N_EVAL problems of MBPP test and ODEX, greedy, zero-shot, $EVAL_TOKENS tokens per turn"
if [ -n "${PUBLISH:-}" ]; then
  run cp "$OUT/commands.log" "$OUT/curriculum/curriculum.json" "$PUBLISH/"  # the page, plots and numbers: above
fi
[ "$DRY_RUN" = 1 ] || echo "page: $OUT/claims.md ($(( ($(date +%s) - STARTED) / 60 )) min this sitting)"

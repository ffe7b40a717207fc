#!/usr/bin/env bash
# Self-correction you can see: a boost model that rewrites at turn 2, CoCoS arms trained from it, and held-out
# evaluations on all 500 MBPP test problems, HumanEval and ODEX. One resumable queue: each job writes its own folder
# and is skipped when done; two invocations (one per core) share the jobs.
#
#   BUDGET=tiny DRY_RUN=1 bash scripts/self_correction.sh       # print every command, run nothing
#   OMP_NUM_THREADS=1 SITTING_MINUTES=240 bash scripts/self_correction.sh & sleep 5; \
#   OMP_NUM_THREADS=1 SITTING_MINUTES=240 bash scripts/self_correction.sh; wait      # one sitting, two cores
#   PUBLISH=docs/results/self_correction bash scripts/self_correction.sh              # the page and its numbers
#
# Jobs (OUT = runs/self_correction_<budget> unless set):
#   boost_new   configs/boost_sft.yaml: KodCode + MBPP train; 80% of the second turns fix one of the starting model's
#               own wrong answers (sampled 4x at 0.9, failing in the sandbox), the rest keep its own right ones
#   boost_old   the same problems and budget with the earlier data: one-line mutants of the reference, half of the
#               second turns keep the reference itself (what every earlier page's boost model learned from)
#   reachable   boost_new's pass@8 on MBPP test (8 turn-1 samples at 0.9; and 4 at 0.5 and at 0.3) against its greedy
#               acc@1, and how many greedy-wrong problems some sample solves: how much a turn 2 could fix at this size
#               (docs/results/self_correction/confidence.py turns them into the re-answer oracle)
#   curriculum  boost_new samples 4 two-turn episodes per MBPP-train problem at 0.9; curriculum.json keeps the
#               problems that CURRICULUM_RULE keeps, rule_signal.json says how much turn-2 signal each rule leaves;
#               curriculum_binary/ the same under the binary reward (the variance rule: some sample solves it)
#   train ARM seed, from boost_new, zero-shot, on the curriculum, STEPS steps of configs/cocos_cpu.yaml's budget:
#               last_turn   the authors' mode: turn 1 shared, k turn-2 samples, only turn 2 trained
#               traj_g0.5   the paper's trajectory mode, gamma 0.5
#               copy_pen    (our extension) traj_g0.5 with a copy penalty on wrong turn-1 answers (copy_penalty 0.5):
#                           the arm to add if both arms above still copy wrong answers at the halfway point
#               last_turn_copy_pen  (our extension) last_turn with the same copy penalty: the fast arm (turn 1
#                           shared, ~16 s a step) that copied more as it trained, penalised for it
#               per_turn    traj_g0.5 with per-turn credit (advantage=per-turn, docs/credit.md)
#               last_turn_binary  last_turn with the binary reward (all tests pass): the progressive reward paid the
#                           last_turn arm 1/3 for `return <literal>` echoing one shown test, and it learned that
#               last_turn_binary_copy_pen  (our extension) last_turn_binary with the copy penalty
#               last_turn_binary_all  last_turn_binary on all 374 MBPP-train problems (no curriculum: the 129 kept
#                           ones are seen ~19 times in 300 steps), greedy 2-turn MBPP validation at step 0 and every 50 steps
#               per_turn_binary  trajectory mode (gamma 0.5, both turns trained) with per-turn credit and the binary
#                           reward: turn 2's tokens are scored by r2 - r1 alone (a fix +1, a break -1), not by the whole
#                           episode; the same validation checks
#               traj_binary  its control: the same with the paper's estimator (rloo: every turn scored by the episode)
#               per_turn_binary_t0.5  per_turn_binary with the training rollouts sampled at temperature 0.5, not
#                           0.9: a fresh sample at 0.9 breaks 79% of the boost's right MBPP answers and fixes 1.5% of its
#                           wrong ones, at 0.5 49% and 3.4% (confidence.txt), so turn 2 at 0.9 mostly learns to copy
#               per_turn_binary_g2  per_turn_binary with gamma 2: the accumulated reward at gamma 0.5 pays
#                           wrong -> right (1) twice right -> right (0.5), and per_turn_binary's turn 1 learned to
#                           answer wrong (steps 205-230); at gamma 2 turn 1 is paid r1 + r2 and turn 2 still r2 - r1
#   validation  boost_new greedy, 2 turns, on the 90 MBPP-validation problems at the training token budget: the start
#               that the in-run checks (eval_every) compare against
#   self_corrector  Self-Corrector with boost_new as its generator (configs/self_corrector.yaml, the comparison's small
#               budget): the one baseline that rewrote at turn 2 before (edit similarity 53-78%)
#   sampled MODEL mbpp: 4 two-turn samples per MBPP-test problem at temperature 0.9, the training batches'
#               decoding (per_turn_binary_t0.5's too: one decoding for every model)
#   eval MODEL DATASET: greedy, 2 turns, zero-shot, EVAL_TOKENS per turn, every problem of MBPP test / HumanEval /
#               ODEX (N_EVAL caps them for a dry run of the plumbing)
#
# Knobs (environment): BUDGET tiny | cpu; SEEDS (cpu "0"); STEPS (cpu 300); ARMS (default "last_turn traj_g0.5");
# CURRICULUM_RULE (partial | variance); SITTING_MINUTES (0 = no limit: each training run gets the time left as
# max_minutes and checkpoints); OUT; PUBLISH; DRY_RUN; NICE (default "nice -n 15").
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_lib.sh  # show, run, sitting_over, has_model, need_cocos, run_env; the queue: claim, release, ...
need_cocos

BUDGET="${BUDGET:-cpu}"
case "$BUDGET" in
  tiny)
    : "${SEEDS:=0}" "${STEPS:=2}" "${N_EVAL:=3}"
    EVAL_TOKENS=48; SAVE_EVERY=1; TRAIN_TOKENS=48
    SFT_SET=(--set max_rows=8 --set max_steps=2 --set batch_size=2 --set grad_accum=1 --set max_length=512
             --set mbpp_train=false --set own_samples=2 --set own_max_new_tokens=48)
    CUR_SET=(--limit 8 --max-new-tokens 48)
    SC_SET=(--set limit=4 --set samples=2 --set max_new_tokens=48 --set include_reference=true --set rounds=1
            --set corrections_per_problem=1 --set max_steps=1 --set batch_size=2 --set grad_accum=1)
    COMMON=(train_limit=8 problems_per_step=2 k=2 micro_batch=4 max_new_tokens=48)
    ;;
  cpu)
    : "${SEEDS:=0}" "${STEPS:=300}" "${N_EVAL:=}"
    EVAL_TOKENS=256; SAVE_EVERY=10; TRAIN_TOKENS=192  # configs/cocos_cpu.yaml's max_new_tokens
    # one epoch at 512 tokens: ~1 h of one core per boost model (measured, 116 steps of 8 examples at ~30 s)
    SFT_SET=(--set max_length=512 --set epochs=1 --set batch_size=4 --set grad_accum=2)
    CUR_SET=(--max-new-tokens 192)
    # Self-Corrector as scripts/paper_comparison.sh's small budget runs it (52 min of one core there)
    SC_SET=(--set limit=32 --set samples=4 --set max_new_tokens=192 --set include_reference=true --set rounds=1
            --set corrections_per_problem=1 --set max_pairs=96 --set epochs=1 --set lr=5e-5 --set batch_size=4
            --set grad_accum=2)
    COMMON=()  # configs/cocos_cpu.yaml as it is: 8 problems x k 4 x 2 turns, 192 tokens per turn, lr 2e-5
    ;;
  *) echo "BUDGET must be tiny or cpu (got $BUDGET)" >&2; exit 2 ;;
esac
OUT="${OUT:-runs/self_correction_$BUDGET}"
ARMS="${ARMS:-last_turn traj_g0.5}"
CURRICULUM_RULE="${CURRICULUM_RULE:-partial}"
DRY_RUN="${DRY_RUN:-0}"
SITTING_MINUTES="${SITTING_MINUTES:-0}"
NICE="${NICE:-nice -n 15}"
run_env
STARTED=$(date +%s)
LOG="$OUT/commands.log"
if [ "$DRY_RUN" != 1 ]; then mkdir -p "$OUT"; fi
LOCKS="$OUT/locks"
read -r -a SEED_LIST <<<"$SEEDS"
read -r -a ARM_LIST <<<"$ARMS"
DATASETS=(mbpp humaneval odex)
LIMIT=(); [ -z "$N_EVAL" ] || LIMIT=(--limit "$N_EVAL")

arm_sets() {  # the --set values of an arm beyond the budget's
  case "$1" in
    last_turn) echo "mode=last-turn train_turns=last" ;;
    traj_g0.5) echo "mode=trajectory gamma=0.5" ;;
    copy_pen) echo "mode=trajectory gamma=0.5 copy_penalty=0.5" ;;
    last_turn_copy_pen) echo "mode=last-turn train_turns=last copy_penalty=0.5" ;;
    per_turn) echo "mode=trajectory gamma=0.5 advantage=per-turn" ;;
    last_turn_binary) echo "mode=last-turn train_turns=last reward=binary" ;;
    last_turn_binary_copy_pen) echo "mode=last-turn train_turns=last reward=binary copy_penalty=0.5" ;;
    last_turn_binary_all) echo "mode=last-turn train_turns=last reward=binary curriculum_k=0 curriculum_from=\"\"" \
                               "eval_limit=${N_EVAL:-90} eval_every=50 eval_at_start=true" ;;
    per_turn_binary) echo "mode=trajectory gamma=0.5 advantage=per-turn reward=binary eval_limit=${N_EVAL:-90} eval_every=50" \
                          "eval_at_start=true" ;;
    traj_binary) echo "mode=trajectory gamma=0.5 reward=binary eval_limit=${N_EVAL:-90} eval_every=50 eval_at_start=true" ;;
    per_turn_binary_t0.5) echo "$(arm_sets per_turn_binary) temperature=0.5" ;;
    per_turn_binary_g2) echo "$(arm_sets per_turn_binary) gamma=2" ;;
    *) echo "unknown arm $1 (last_turn, traj_g0.5, copy_pen, last_turn_copy_pen, per_turn, last_turn_binary," \
            "last_turn_binary_copy_pen, last_turn_binary_all, per_turn_binary, traj_binary, per_turn_binary_t0.5," \
            "per_turn_binary_g2)" >&2; exit 2 ;;
  esac
}
model_of() {  # the checkpoint folder an evaluation reads
  case "$1" in boost_*|self_corrector) echo "$OUT/$1" ;; *) echo "$OUT/train/$1/checkpoints/step_$STEPS" ;; esac
}

REACHABLE=("boost_new_mbpp 0.9 8" "boost_new_mbpp_t0.5 0.5 4" "boost_new_mbpp_t0.3 0.3 4")  # folder temperature samples
JOBS=(boost_new boost_old "eval boost_new mbpp" "eval boost_old mbpp" curriculum reachable validation)
for seed in "${SEED_LIST[@]}"; do for arm in "${ARM_LIST[@]}"; do JOBS+=("train ${arm}_s$seed"); done; done
# each arm's MBPP evaluation as soon as it is trained: the number the goal is stated on
for seed in "${SEED_LIST[@]}"; do for arm in "${ARM_LIST[@]}"; do JOBS+=("eval ${arm}_s$seed mbpp"); done; done
# and at the training temperature: does what the monitors show on training problems hold on held-out ones?
JOBS+=("sampled boost_new mbpp")
for seed in "${SEED_LIST[@]}"; do for arm in "${ARM_LIST[@]}"; do JOBS+=("sampled ${arm}_s$seed mbpp"); done; done
for ds in humaneval odex; do JOBS+=("eval boost_new $ds" "eval boost_old $ds"); done
JOBS+=(self_corrector); for ds in "${DATASETS[@]}"; do JOBS+=("eval self_corrector $ds"); done
for seed in "${SEED_LIST[@]}"; do for arm in "${ARM_LIST[@]}"; do for ds in humaneval odex; do
  JOBS+=("eval ${arm}_s$seed $ds"); done; done; done

job_done() {  # job_done KIND [NAME [DATASET]]
  case "$1" in
    boost_*) has_model "$OUT/$1" ;;
    curriculum) [ -f "$OUT/curriculum/curriculum.json" ] ;;
    reachable) local r; for r in "${REACHABLE[@]}"; do [ -f "$OUT/reachable/${r%% *}/metrics.json" ] || return 1; done ;;
    validation) [ -f "$OUT/eval_validation/boost_new/metrics.json" ] ;;
    self_corrector) has_model "$OUT/self_corrector/corrector" ;;
    train) [ -f "$OUT/train/$2/FINISHED" ] ;;
    eval|sampled) [ -f "$OUT/$1/$2/$3/metrics.json" ] ;;
  esac
}
job_ready() {  # whether a job's inputs exist
  case "$1" in
    curriculum|reachable|validation) job_done boost_new ;;
    train) job_done curriculum ;;
    self_corrector) job_done boost_new ;;
    eval|sampled) case "$2" in boost_*|self_corrector) job_done "$2" ;; *) job_done train "$2" ;; esac ;;
    *) return 0 ;;
  esac
}

boost_job() {  # boost_job new|old
  local dir="$OUT/boost_$1" data=()
  [ "$1" = old ] && data=(--set wrong_answers=mutants --set fix_fraction=0.5)
  local resume=(); if compgen -G "$dir/checkpoints/checkpoint-*" >/dev/null; then resume=(--set resume=true); fi
  run cocos sft --config configs/boost_sft.yaml --out "$dir" "${data[@]}" "${SFT_SET[@]}" --set save_steps=20 "${resume[@]}"
}

curriculum_job() {
  run cocos eval --model "$OUT/boost_new" --dataset mbpp --split train --turns 2 --samples-per-problem 4 \
    --temperature 0.9 --rollout-dtype auto "${CUR_SET[@]}" --out "$OUT/curriculum/samples"
  run python -m cocos.rl.curriculum "$OUT/curriculum/samples/samples.jsonl" --rule "$CURRICULUM_RULE" \
    --out "$OUT/curriculum/curriculum.json"
  # the same samples scored by the binary reward (all tests pass): what the binary arms' groups can learn from
  run python -m cocos.rl.curriculum "$OUT/curriculum/samples/samples.jsonl" --rule variance --reward binary \
    --out "$OUT/curriculum_binary/curriculum.json"
}

reachable_job() {  # pass@k against greedy acc@1: is a fix within the model's reach at all, and at which temperature?
  local folder t n
  for r in "${REACHABLE[@]}"; do
    read -r folder t n <<<"$r"
    [ -f "$OUT/reachable/$folder/metrics.json" ] && continue
    run cocos eval --model "$OUT/boost_new" --dataset mbpp --split test "${LIMIT[@]}" --turns 1 --samples-per-problem "$n" \
      --temperature "$t" --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto --out "$OUT/reachable/$folder"
  done
}

validation_job() {  # the in-run checks' reference: the same split, problems, turns and tokens (the trainer's eval)
  run cocos eval --model "$OUT/boost_new" --dataset mbpp --split validation "${LIMIT[@]}" --turns 2 --temperature 0 \
    --max-new-tokens "$TRAIN_TOKENS" --rollout-dtype auto --out "$OUT/eval_validation/boost_new"
}

STOPPED=0
train_job() {  # train_job ARM_sSEED
  local name=$1 arm=${1%_s*} seed=${1##*_s} dir="$OUT/train/$1" s
  local args=(train --config configs/cocos_cpu.yaml --out "$dir" --no-progress)
  local sets=(model="$OUT/boost_new" fewshot=false seed="$seed" max_steps="$STEPS" curriculum_k=4
              curriculum_from="$OUT/curriculum/curriculum.json" eval_limit=0 save_every="$SAVE_EVERY" save_total_limit=1
              $(arm_sets "$arm") "${COMMON[@]}")
  if [ "$SITTING_MINUTES" != 0 ]; then sets+=(max_minutes="$(minutes_left)"); fi
  for s in "${sets[@]}"; do args+=(--set "$s"); done
  if compgen -G "$dir/checkpoints/step_*/trainer_state.pt" >/dev/null; then args+=(--resume)
  elif [ -d "$dir" ] && [ "$DRY_RUN" != 1 ]; then echo "# $dir: no checkpoint to resume from: starting it again"; rm -rf "$dir"; fi
  run cocos "${args[@]}"
  [ "$DRY_RUN" = 1 ] && return 0
  if [ ! -f "$dir/checkpoints/step_$STEPS/trainer_state.pt" ]; then
    echo "# $dir stopped before step $STEPS (max_minutes): rerun the same command to continue"; STOPPED=1; return 0
  fi
  date -u +%FT%TZ > "$dir/FINISHED"
}

self_corrector_job() {
  run cocos self-corrector --config configs/self_corrector.yaml --out "$OUT/self_corrector" --set model="$OUT/boost_new" \
    "${SC_SET[@]}"
}

eval_job() {  # eval_job MODEL DATASET
  local actor=(); [ "$1" = self_corrector ] && actor=(--actor self-corrector --actor-arg corrector_rollout_dtype=auto)
  run cocos eval --model "$(model_of "$1")" --dataset "$2" --split test "${LIMIT[@]}" --turns 2 --temperature 0 \
    --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto "${actor[@]}" --out "$OUT/eval/$1/$2"
}

sampled_job() {  # sampled_job MODEL DATASET: 4 two-turn samples per problem at the budget's training temperature
  run cocos eval --model "$(model_of "$1")" --dataset "$2" --split test "${LIMIT[@]}" --turns 2 --samples-per-problem 4 \
    --temperature 0.9 --max-new-tokens "$EVAL_TOKENS" --rollout-dtype auto --out "$OUT/sampled/$1/$2"
}

echo "# self-correction: BUDGET=$BUDGET SEEDS='$SEEDS' STEPS=$STEPS ARMS='$ARMS' rule=$CURRICULUM_RULE OUT=$OUT"
while :; do
  new_pass
  for job in "${JOBS[@]}"; do
    read -r kind name ds <<<"$job"
    if job_done $job; then echo "= done, skipped: $job"; continue; fi
    if [ "$DRY_RUN" != 1 ] && ! job_ready $job; then WAITING+=("$job"); continue; fi
    claim "${job// /_}" || continue
    if job_done $job; then release; continue; fi  # another invocation finished it meanwhile
    sitting_over
    case "$kind" in
      boost_*) boost_job "${kind#boost_}" ;;
      self_corrector) self_corrector_job ;;
      *) "${kind}_job" $name $ds ;;
    esac
    [ "$STOPPED" = 0 ] || exit 0
    release
  done
  next_pass || break
done

one_at_a_time report
run python -m cocos.eval.report_correction "$OUT" --out "$OUT/page" --budget "$BUDGET: SmolLM2-135M-Instruct; boosts: \
configs/boost_sft.yaml ${SFT_SET[*]}; arms ($ARMS) from boost_new, zero-shot, seeds $SEEDS, $STEPS steps of \
configs/cocos_cpu.yaml (8 problems x k 4 x 2 turns, 192 tokens) on the $CURRICULUM_RULE curriculum; held-out: greedy, \
2 turns, $EVAL_TOKENS tokens per turn, ${N_EVAL:-every} problem(s) of MBPP test, HumanEval and ODEX"
if [ -n "${PUBLISH:-}" ]; then  # the page and the numbers behind it (no checkpoints, no samples)
  run mkdir -p "$PUBLISH/runs"
  run cp -r "$OUT/page/." "$OUT/commands.log" "$PUBLISH/"
  if [ "$DRY_RUN" != 1 ]; then
    (cd "$OUT" && find . \( -path ./locks -o -name checkpoints -o -name tensorboard \) -prune -o -type f \
      \( -name metrics.json -o -name config.json -o -name config.yaml -o -name log.jsonl -o -name sft_stats.json \
         -o -name sft_config.yaml -o -name curriculum.json -o -name rule_signal.json -o -name headroom.json \) -print) |
      while read -r f; do mkdir -p "$PUBLISH/runs/$(dirname "$f")"; cp "$OUT/$f" "$PUBLISH/runs/$f"; done
  fi
fi

#!/usr/bin/env bash
# The paper's comparison at a chosen budget: up to twelve rows (RL_ROWS), each evaluated the same way on MBPP test, HumanEval
# and ODEX, some rows also over 5 turns (the analysis of correction beyond the two trained turns), then one
# `cocos report` in the paper's layout. Every step writes its own folder and is skipped when that folder is
# complete, so a stopped run picks up where it stopped.
#
#   BUDGET=tiny  bash scripts/paper_comparison.sh     # ~50 min on a busy 2-core CPU: checks every step works
#   BUDGET=small bash scripts/paper_comparison.sh     # a first look on a 2-core CPU: ~5.5 h of one core, measured busy
#                                                     # (docs/results/paper_table_small: boost SFT ~70 min, Turn-SFT 48,
#                                                     # Self-Corrector 52, ReVISE 25, SCoRe 29, CoCoS 32, 28 evals 1-4 each)
#   BUDGET=paper MODEL=Qwen/Qwen2.5-1.5B-Instruct bash scripts/paper_comparison.sh   # the paper's settings (GPUs)
#   BUDGET=paper bash scripts/paper_comparison.sh --dry-run   # print every run and its settings, run nothing
#                                                             # (DRY_RUN=1 does the same)
#
# Knobs (environment):
#   MODEL     base model: packaged alias, HF id or local folder (tiny/small: smollm2-135m; paper:
#             Qwen/Qwen2.5-1.5B-Instruct). The paper's three: Qwen/Qwen2.5-1.5B-Instruct,
#             meta-llama/Llama-3.2-1B-Instruct, deepseek-ai/deepseek-coder-1.3b-instruct (docs/paper_budget.md).
#   OUT       run folders (default runs/comparison_<budget>-<model name>)
#   BOOST     an existing boost model folder to reuse instead of training one
#   DATASETS  evaluated datasets (default "mbpp humaneval odex"; mbpp = its test split, task ids 11-510)
#   N_EVAL    first N problems of each dataset (tiny 3, small 30, paper: all: 500 MBPP, 164 HumanEval, 439 ODEX)
#   FEWSHOT   1 = every row gets MBPP's solved examples before turn 1; default 0 = every row zero-shot
#   EXTRACTION  code extraction of every evaluation and every RL reward: strict (default, the paper's) | lenient
#   RL_STEPS  steps of every RL run (tiny 2, small 10, paper: configs/cocos_paper.yaml's max_steps)
#   RL_EXTRA  more field=value settings (space-separated) for every RL run, applied before each run's own:
#             RL_EXTRA="reward=count" trains with the authors' code's reward (the binary and SCoRe runs keep binary)
#   LAUNCH    how RL runs start (default "cocos"; several GPUs: LAUNCH="accelerate launch -m cocos.cli")
#   RL_ROWS   the RL rows run (tiny/paper: all six below; small: "score cocos_g0.5", the paper's main table; the
#             ablations binary and gamma 0/1/2 are checked with seeds by scripts/claims.sh, where one seed of 30
#             problems per dataset could not tell them apart)
#   TURNS5_ROWS      rows also evaluated over TURNS_MAX turns (tiny/small: "boost self_corrector revise cocos_g0.5";
#                    paper: those and turn_sft, score); TURNS5_DATASETS their datasets (default mbpp); TURNS_MAX (5)
#   NICE      prefix of every command (default "nice -n 10")
#   SITTING_MINUTES  stop this invocation after about this many minutes (default 0 = no limit): no step starts
#             after it, and an RL run gets the time left as max_minutes (it stops after the step that passes it and
#             checkpoints); rerun the same command to continue. SFT runs keep a checkpoint every 20 steps.
# Several cores: start the same command once per core (e.g. `BUDGET=small bash scripts/paper_comparison.sh &
# sleep 5; BUDGET=small bash scripts/paper_comparison.sh`): a step takes a lock on OUT/locks while it runs, so the
# invocations share the steps; one whose inputs are not made yet waits (QUEUE_POLL seconds between looks, 120).
#
# Rows (every method but the base starts from the boost model, as in the paper):
#   base          the base model MODEL
#   boost         MODEL + SFT on KodCode (configs/boost_sft.yaml)
#   self_refine   boost, feedback then revision (configs/self_refine.yaml; its turn 2 is the method's own prompt)
#   turn_sft      boost + SFT on its own wrong MBPP-train first turns (configs/turn_sft.yaml)
#   self_corrector  boost as generator + a corrector trained on the generator's samples paired worse -> better and
#                 on its own improving corrections (configs/self_corrector.yaml; evaluated with --actor self-corrector:
#                 the generator writes turn 1, the corrector turns 2..T)
#   revise        boost + the [REFINE] token and two DPO stages, verify then correct (configs/revise.yaml; evaluated
#                 with --actor revise: it refines only after emitting the token, else its answer stands)
#   score, cocos_g0.5, cocos_binary, cocos_g0, cocos_g1, cocos_g2: RL from the boost model. Each is one base
#     config (paper: configs/cocos_paper.yaml; tiny/small: configs/cocos_cpu.yaml with the budget's sizes)
#     plus the run's own overrides, listed in RL_RUNS below; --dry-run prints each resolved config.
#     SCoRe: binary reward, stage I (reward r_2, KL score_beta1 on turn 1) for the first half of the steps, then
#     stage II. The authors' code has stage I only (baselines/score/trainer.py: no stage switch) with a turn-1
#     KL of 0.25 (baselines/score/train.py:124): paper budget score_beta1 0.25; CPU budgets keep configs/score.yaml's 0.1.
# Evaluation, one protocol for every row and dataset: greedy, 2 turns, the paper's prompt format, the same shots
# (FEWSHOT), EVAL_TOKENS new tokens per turn, EXTRACTION, the same rollout dtype; RL rows are evaluated from
# their final checkpoint this way (no checkpoint is chosen on test data). The trainer's own evaluations (MBPP
# validation; paper: every 150 steps) are only the learning curves, in report/training.
# The turn analysis: TURNS5_ROWS evaluated as above but over TURNS_MAX turns, on TURNS5_DATASETS.
# Folders: OUT/boost_model, OUT/turn_sft_model, OUT/self_corrector (generator + corrector/), OUT/revise_model,
# OUT/train/<RL row>, OUT/eval/<row>/<dataset>, OUT/eval5/<row>/<dataset>, OUT/report (report.md: the paper's table,
# every number with its standard error and the budget; unit-level table; acc@t over 5 turns; RL reward/KL curves).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN="${DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "unknown argument $arg (the only one is --dry-run; settings are environment variables, see the header)" >&2; exit 2 ;;
  esac
done

source scripts/_lib.sh  # show, run, sitting_over, has_model, need_cocos, run_env; the queue: claim, release, ...
need_cocos

# The published pages' boost data (one-line mutants of the reference, half of the second turns keep the reference;
# KodCode only): configs/boost_sft.yaml now samples the model's own wrong answers and adds MBPP train.
OLD_BOOST_DATA=(--set wrong_answers=mutants --set fix_fraction=0.5 --set mbpp_train=false)
BUDGET="${BUDGET:-small}"
case "$BUDGET" in
  tiny)
    : "${MODEL:=smollm2-135m}" "${N_EVAL:=3}" "${RL_STEPS:=2}"
    EVAL_TOKENS=48; ROLLOUT_DTYPE=auto; RL_BASE=configs/cocos_cpu.yaml; SCORE_BETA1=0.1
    SFT_SET=("${OLD_BOOST_DATA[@]}" --set max_rows=70 --set max_steps=2 --set batch_size=2 --set grad_accum=1 --set max_length=512)
    TSFT_SET=(--set max_rows=4 --set turn_sft_samples=1 --set max_steps=1 --set batch_size=2 --set grad_accum=1 --set max_new_tokens=48)
    RL_SET=(problems_per_step=2 k=2 micro_batch=4 max_new_tokens=48 eval_limit=0 save_every=0 skip_uniform_groups=true)
    # the reference solutions join the Self-Corrector's pool here: 4 problems x 2 samples may hold no improving pair
    SC_SET=(--set limit=4 --set samples=2 --set max_new_tokens=48 --set include_reference=true --set rounds=1
            --set corrections_per_problem=1 --set max_steps=1 --set batch_size=2 --set grad_accum=1)
    RV_SET=(--set limit=4 --set samples=2 --set max_new_tokens=48 --set max_steps=1 --set batch_size=2 --set grad_accum=1)
    : "${TURNS5_ROWS:=boost self_corrector revise cocos_g0.5}"
    ;;
  small)
    : "${MODEL:=smollm2-135m}" "${N_EVAL:=30}" "${RL_STEPS:=10}"
    EVAL_TOKENS=256; ROLLOUT_DTYPE=auto; RL_BASE=configs/cocos_cpu.yaml; SCORE_BETA1=0.1
    SFT_SET=("${OLD_BOOST_DATA[@]}" --set epochs=2 --set max_length=768 --set batch_size=4 --set grad_accum=2 --set lr=5e-5)
    TSFT_SET=(--set max_rows=96 --set turn_sft_samples=1 --set turn_sft_temperature=0.0 --set epochs=2 --set max_new_tokens=256)
    # micro_batch 4: half the peak memory of 8 (~11 GB); curves on 20 MBPP validation problems at steps 5 and 10
    RL_SET=(problems_per_step=8 k=4 micro_batch=4 max_new_tokens=192 eval_every=5 eval_limit=20 eval_max_new_tokens=256
            save_every=0 skip_uniform_groups=true)
    # Self-Corrector: the first 32 MBPP-train problems x 4 samples, at most 96 pairs per corrector fit;
    # learning rates for a few dozen steps on a 135M model (the configs keep the paper-scale ones). The reference
    # solutions join the corrector's pool: SmolLM2-135M's own samples of 32 problems can all score 0 (no pair at all;
    # measured with the base model)
    SC_SET=(--set limit=32 --set samples=4 --set max_new_tokens=192 --set include_reference=true --set rounds=1
            --set corrections_per_problem=1 --set max_pairs=96 --set epochs=1 --set lr=5e-5 --set batch_size=4
            --set grad_accum=2)
    # ReVISE on 16 problems x 2 samples, stage 2 on its correction pairs only: a DPO pair costs four passes over
    # prompt + answer (chosen and rejected, policy and reference), ~20 s on a busy 2-core CPU
    # (4 DPO steps per stage: at 1e-5 the verdict moved 0.01 nats, measured; 5e-5 as the boost SFT)
    # (batch 2 x accumulation 4: the same 8 pairs per step at about half the peak memory; at batch 4 a DPO step
    # reached 12.4 GB and was OOM-killed beside another training run and a CI run on 24 GB)
    RV_SET=(--set limit=16 --set samples=2 --set max_new_tokens=192 --set stage2_verify=false --set epochs=1 --set lr=5e-5
            --set batch_size=2 --set grad_accum=4)
    : "${TURNS5_ROWS:=boost self_corrector revise cocos_g0.5}" "${RL_ROWS:=score cocos_g0.5}"
    ;;
  paper)
    # everything from configs/cocos_paper.yaml (its comments give each setting's source); 512 tokens as it trains
    : "${MODEL:=Qwen/Qwen2.5-1.5B-Instruct}" "${N_EVAL:=}"
    RL_BASE=configs/cocos_paper.yaml
    : "${RL_STEPS:=$(cocos train --config "$RL_BASE" --out /nonexistent --print-config | sed -n 's/^max_steps: //p')}"
    EVAL_TOKENS=512; ROLLOUT_DTYPE=model; SCORE_BETA1=0.25
    SFT_SET=(); TSFT_SET=(); RL_SET=(); SC_SET=(); RV_SET=()
    : "${TURNS5_ROWS:=boost turn_sft self_corrector revise score cocos_g0.5}"
    ;;
  *) echo "BUDGET must be tiny, small or paper (got $BUDGET)" >&2; exit 2 ;;
esac
DATASETS="${DATASETS:-mbpp humaneval odex}"
FEWSHOT="${FEWSHOT:-0}"
EXTRACTION="${EXTRACTION:-strict}"
LAUNCH="${LAUNCH:-cocos}"
TURNS5_DATASETS="${TURNS5_DATASETS:-mbpp}"
TURNS_MAX="${TURNS_MAX:-5}"
MODEL_TAG="$(basename "$MODEL" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9._\n-' '_')"
OUT="${OUT:-runs/comparison_$BUDGET-$MODEL_TAG}"
NICE="${NICE:-nice -n 10}"
export COCOS_DATA_DIR="${COCOS_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export TOKENIZERS_PARALLELISM=false
# CPU budgets run from the offline copies; the paper budget needs the Hub (its models, 20,000 KodCode rows)
if [ "$BUDGET" != paper ]; then export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"; fi
LOG="$OUT/commands.log"
if [ "$DRY_RUN" != 1 ]; then mkdir -p "$OUT"; fi
SITTING_MINUTES="${SITTING_MINUTES:-0}"
STARTED=$(date +%s)

# RL rows: name, label, own overrides (after the base config, the budget's RL_SET and RL_EXTRA)
SCORE_STAGE1=$((RL_STEPS / 2))
ALL_RL_RUNS=(
  "score|SCoRe|method=score reward=binary score_stage1_steps=$SCORE_STAGE1 score_beta1=$SCORE_BETA1"
  "cocos_g0.5|CoCoS (γ=0.5)|"
  "cocos_binary|CoCoS binary reward|reward=binary"
  "cocos_g0|CoCoS γ=0|gamma=0"
  "cocos_g1|CoCoS γ=1|gamma=1"
  "cocos_g2|CoCoS γ=2|gamma=2"
)
ALL_RL_ROWS=""; for spec in "${ALL_RL_RUNS[@]}"; do ALL_RL_ROWS+="${spec%%|*} "; done
RL_ROWS="${RL_ROWS:-$ALL_RL_ROWS}"
RL_RUNS=()
for row in $RL_ROWS; do
  found=0
  for spec in "${ALL_RL_RUNS[@]}"; do
    if [ "${spec%%|*}" = "$row" ]; then RL_RUNS+=("$spec"); found=1; fi
  done
  if [ "$found" = 0 ]; then echo "RL_ROWS: unknown row $row (rows: ${ALL_RL_ROWS% })" >&2; exit 2; fi
done
FEWSHOT_FLAG=(); SHOTS="zero-shot"
if [ "$FEWSHOT" = 1 ]; then FEWSHOT_FLAG=(--fewshot); SHOTS="3-shot"; fi
LIMIT_FLAG=(); LIMIT_TEXT="all"
if [ -n "$N_EVAL" ]; then LIMIT_FLAG=(--limit "$N_EVAL"); LIMIT_TEXT="first $N_EVAL"; fi

skip() { echo "= done, skipped: $(show "$@")"; }  # a step whose output is already complete
done_eval() { [ -f "$1/metrics.json" ]; }
done_train() { [ -d "$1/checkpoints/step_$RL_STEPS" ]; }
# SFT runs keep a checkpoint every 20 optimizer steps; one stopped midway continues from its last
sft_resume() { echo --set save_steps=20; if compgen -G "$1/checkpoints/checkpoint-*" >/dev/null; then echo --set resume=true; fi; }

echo "# paper comparison: BUDGET=$BUDGET MODEL=$MODEL OUT=$OUT"
echo "# evaluation of every row: $DATASETS ($LIMIT_TEXT problems of each test split), greedy, 2 turns, paper prompts," \
     "$SHOTS, $EVAL_TOKENS new tokens per turn, extraction $EXTRACTION, rollout dtype $ROLLOUT_DTYPE"
echo "# RL runs: $RL_BASE + the overrides shown, $RL_STEPS steps each; resolved configs below each command"

# ---- the steps, as a queue -------------------------------------------------------------------------
# Every step runs in passes until none is left: a step whose inputs are not made yet waits for a later pass, so
# two invocations of this command (one per core) share the work: while one trains the boost model, the other
# evaluates the base model (scripts/_lib.sh: claim, release, next_pass).
LOCKS="$OUT/locks"
q() { printf '%q' "$1"; }  # a path inside a test string (step's DONE and NEED are eval'd)
step() {  # step NAME DONE NEED CMD...: run CMD unless DONE holds; wait (a later pass) while NEED does not hold
  local name=$1 done_test=$2 need=$3; shift 3
  if eval "$done_test"; then skip "$@"; return 0; fi
  if [ "$DRY_RUN" != 1 ] && [ -n "$need" ] && ! eval "$need"; then WAITING+=("$name"); return 0; fi
  claim "$name" || return 0
  if eval "$done_test"; then release; return 0; fi  # another invocation made it meanwhile
  run "$@"
  release
}
waits() { [[ " ${WAITING[*]} " == *" $1 "* ]]; }

BOOST_DIR="${BOOST:-$OUT/boost_model}"
if [ -n "${BOOST:-}" ] && [ "$DRY_RUN" != 1 ] && ! has_model "$BOOST"; then
  echo "BOOST=$BOOST: no model*.safetensors there (give a finished boost model folder, or leave BOOST unset)" >&2; exit 2
fi
TSFT_DIR="$OUT/turn_sft_model"
SC_DIR="$OUT/self_corrector"
RV_DIR="$OUT/revise_model"
NEED_BOOST="has_model $(q "$BOOST_DIR")"
RL_COMMON=(--set model="$BOOST_DIR" --set fewshot=false --set max_steps="$RL_STEPS" --set extraction="$EXTRACTION")
for s in "${RL_SET[@]}" ${RL_EXTRA:-}; do RL_COMMON+=(--set "$s"); done

ROWS=(base boost self_refine turn_sft self_corrector revise)
LABELS=("Base ($SHOTS)" "Boost" "Self-Refine" "Turn-SFT" "Self-Corrector" "ReVISE")
MODELS=("$MODEL" "$BOOST_DIR" "$BOOST_DIR" "$TSFT_DIR" "$SC_DIR" "$RV_DIR")
NEEDS=("" "$NEED_BOOST" "$NEED_BOOST" "has_model $(q "$TSFT_DIR")" "has_model $(q "$SC_DIR/corrector")"
       "has_model $(q "$RV_DIR")")
for spec in "${RL_RUNS[@]}"; do
  IFS='|' read -r name label _own <<<"$spec"
  ROWS+=("$name"); LABELS+=("$label"); MODELS+=("$OUT/train/$name/checkpoints/step_$RL_STEPS")
  NEEDS+=("done_train $(q "$OUT/train/$name")")
done
actor_of() {  # the turn actor of a row (cocos.baselines), as cocos eval options; the model writes every turn otherwise
  case "$1" in
    # Self-Refine: its actor writes turn 2 (feedback, then revision), as much room for feedback as for code
    self_refine) echo "--config configs/self_refine.yaml --actor-arg feedback_tokens=$EVAL_TOKENS" ;;
    # the generator (the run folder) writes turn 1, the corrector (its corrector/) the later turns, in the same dtype
    self_corrector) echo "--actor self-corrector --actor-arg corrector_rollout_dtype=$ROLLOUT_DTYPE" ;;
    revise) echo "--actor revise" ;;
  esac
}
evaluate() {  # evaluate ROW_INDEX DATASET TURNS FOLDER
  local i=$1 ds=$2 turns=$3 dir=$4
  read -r -a actor <<<"$(actor_of "${ROWS[$i]}")"
  cmd=(cocos eval "${actor[@]}" --model "${MODELS[$i]}" --dataset "$ds" --split test "${LIMIT_FLAG[@]}" --turns "$turns"
       "${FEWSHOT_FLAG[@]}" --temperature 0 --max-new-tokens "$EVAL_TOKENS" --extraction "$EXTRACTION"
       --rollout-dtype "$ROLLOUT_DTYPE" --out "$dir")
  step "${dir#"$OUT/"}" "done_eval $(q "$dir")" "${NEEDS[$i]}" "${cmd[@]}"
}

one_pass() {
  # ---- models ----------------------------------------------------------------------------------------
  if [ -z "${BOOST:-}" ]; then
    step boost_model "$NEED_BOOST" "" cocos sft --config configs/boost_sft.yaml --out "$BOOST_DIR" --set model="$MODEL" \
      "${SFT_SET[@]}" $(sft_resume "$BOOST_DIR")
  fi
  step turn_sft_model "has_model $(q "$TSFT_DIR")" "$NEED_BOOST" cocos sft --config configs/turn_sft.yaml \
    --out "$TSFT_DIR" --set model="$BOOST_DIR" "${TSFT_SET[@]}" $(sft_resume "$TSFT_DIR")
  step self_corrector "has_model $(q "$SC_DIR/corrector")" "$NEED_BOOST" cocos self-corrector \
    --config configs/self_corrector.yaml --out "$SC_DIR" --set model="$BOOST_DIR" --set extraction="$EXTRACTION" \
    "${SC_SET[@]}"
  step revise_model "has_model $(q "$RV_DIR")" "$NEED_BOOST" cocos revise --config configs/revise.yaml --out "$RV_DIR" \
    --set model="$BOOST_DIR" --set extraction="$EXTRACTION" "${RV_SET[@]}"

  local spec name own s
  for spec in "${RL_RUNS[@]}"; do
    IFS='|' read -r name _label own <<<"$spec"
    local dir="$OUT/train/$name"
    targs=(--config "$RL_BASE" --out "$dir" "${RL_COMMON[@]}")
    for s in $own; do targs+=(--set "$s"); done
    # a run stopped midway continues from its last checkpoint
    if compgen -G "$dir/checkpoints/step_*" >/dev/null; then targs+=(--resume); fi
    if ! done_train "$dir" && [ "$SITTING_MINUTES" != 0 ]; then
      targs+=(--set max_minutes="$(minutes_left)")  # run() stops at 0 left
    fi
    step "train/$name" "done_train $(q "$dir")" "$NEED_BOOST" $LAUNCH train "${targs[@]}"
    if [ "$DRY_RUN" = 1 ]; then  # the config this run resolves to (the loader the trainer uses), indented
      done_train "$dir" || cocos train "${targs[@]}" --print-config | sed 's/^/    /'
    elif ! done_train "$dir" && ! waits "train/$name"; then
      echo "# $dir stopped before step $RL_STEPS (max_minutes): rerun the same command to continue"; exit 0
    fi
  done

  # ---- evaluation: every row on every dataset, one protocol ------------------------------------------
  local ds i j row
  for ds in $DATASETS; do
    for i in "${!ROWS[@]}"; do evaluate "$i" "$ds" 2 "$OUT/eval/${ROWS[$i]}/$ds"; done
  done
  # the turn analysis: the same protocol over TURNS_MAX turns (greedy: its turns 1-2 are the 2-turn run's)
  for ds in $TURNS5_DATASETS; do
    for row in $TURNS5_ROWS; do
      i=-1
      for j in "${!ROWS[@]}"; do if [ "${ROWS[$j]}" = "$row" ]; then i=$j; fi; done
      if [ "$i" = -1 ]; then echo "TURNS5_ROWS: unknown row $row (rows: ${ROWS[*]})" >&2; exit 2; fi
      evaluate "$i" "$ds" "$TURNS_MAX" "$OUT/eval5/$row/$ds"
    done
  done
}
while :; do
  new_pass
  one_pass
  next_pass || break
done

# ---- report: one, in the paper's layout (folders with one label are one method) ----------------------
dirs=(); labels=()
for ds in $DATASETS; do
  for i in "${!ROWS[@]}"; do dirs+=("$OUT/eval/${ROWS[$i]}/$ds"); labels+=(--label "${LABELS[$i]}"); done
done
for ds in $TURNS5_DATASETS; do
  for i in "${!ROWS[@]}"; do
    if [[ " $TURNS5_ROWS " == *" ${ROWS[$i]} "* ]]; then dirs+=("$OUT/eval5/${ROWS[$i]}/$ds"); labels+=(--label "${LABELS[$i]}"); fi
  done
done
for spec in "${RL_RUNS[@]}"; do IFS='|' read -r name label _own <<<"$spec"; dirs+=("$OUT/train/$name"); labels+=(--label "$label"); done
RL_TEXT="RL $RL_STEPS steps"
one_at_a_time report
run cocos report "${dirs[@]}" --out "$OUT/report" "${labels[@]}" \
  --budget "$BUDGET: $LIMIT_TEXT problems of each test split, $SHOTS, greedy, $EVAL_TOKENS tokens per turn, $RL_TEXT" \
  --title "CoCoS comparison, $MODEL_TAG (training curves: the trainer's evaluations on MBPP validation)"
echo "report: $OUT/report/report.md"

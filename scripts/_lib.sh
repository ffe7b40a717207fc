# Helpers shared by the study scripts (paper_comparison, claims, self_correction, credit; sourced, not run).
# The caller sets DRY_RUN, LOG, NICE, SITTING_MINUTES and STARTED (date +%s) before calling them.

show() {  # the command as a shell would read it back (words with spaces or symbols in single quotes)
  local out="" w q="'\\''"
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then out+="$w "; else out+="'${w//\'/$q}' "; fi
  done
  echo "${out% }"
}
minutes_left() {  # of this sitting; a large number without a limit
  if [ "$SITTING_MINUTES" = 0 ]; then echo 100000; return; fi
  echo $(( SITTING_MINUTES - ($(date +%s) - STARTED) / 60 ))
}
sitting_over() {  # called before each step that has not run yet: past SITTING_MINUTES, stop here
  if [ "$DRY_RUN" != 1 ] && [ "$(minutes_left)" -le 0 ]; then
    echo "# sitting over (SITTING_MINUTES=$SITTING_MINUTES): rerun the same command to continue"; exit 0
  fi
}
run() {  # run CMD...: print it; unless dry, append it and its time to LOG and run it (not past the sitting)
  if [ "$DRY_RUN" = 1 ]; then echo "+ $(show "$@")"; return 0; fi
  sitting_over
  echo "+ $(show "$@")" | tee -a "$LOG"
  local t0=$SECONDS
  $NICE "$@"
  echo "  ($((SECONDS - t0)) s)" | tee -a "$LOG"
}
has_model() { [ -f "$1/model.safetensors" ] || compgen -G "$1/model*.safetensors" >/dev/null; }  # a saved HF model

# A queue shared by several invocations of one script (one per core). The script runs its steps in passes; a step
# that is not done takes a lock on LOCKS/<name>.lock while it runs (its process inherits the lock), so another
# invocation skips it and takes the next one. A step whose inputs are not ready, or that another invocation holds,
# joins WAITING; between passes, `next_pass` waits for them. The caller sets LOCKS.
claim() {  # claim NAME: 0 when this invocation now holds NAME's lock (fd 8; always in a dry run), else 1
  [ "$DRY_RUN" = 1 ] && return 0
  mkdir -p "$LOCKS"
  local lock="$LOCKS/${1//\//_}.lock"  # a step named after its folder: one file per step
  exec 8>"$lock" || { echo "cannot open the lock $lock" >&2; exit 1; }
  if flock -n 8; then return 0; fi
  exec 8>&-
  WAITING+=("$1"); LOCKED=1
  return 1
}
release() { [ "$DRY_RUN" = 1 ] || exec 8>&-; RAN=1; }
one_at_a_time() {  # one_at_a_time NAME: wait for, then hold to the end, LOCKS/NAME.lock (fd 9): e.g. for the report
  [ "$DRY_RUN" = 1 ] && return 0  # that two invocations finishing together would both write
  mkdir -p "$LOCKS"; exec 9>"$LOCKS/$1.lock"; flock 9
}
new_pass() { WAITING=(); LOCKED=0; RAN=0; }
next_pass() {  # after a pass: 0 = pass again (after a wait when this pass ran nothing), 1 = nothing left to wait for
  if [ "$DRY_RUN" = 1 ] || [ ${#WAITING[@]} = 0 ]; then return 1; fi
  if [ "$RAN" = 1 ]; then return 0; fi  # a step finished: what waited on it may be ready
  if [ "$LOCKED" = 0 ]; then  # nothing ran, nothing is held elsewhere: what waits can never start
    echo "nothing can run: ${WAITING[*]} wait for inputs that no step makes (see the commands above)" >&2; exit 1
  fi
  sitting_over
  echo "# waiting for ${#WAITING[@]} step(s) another invocation runs or makes the inputs of (${WAITING[0]}, ...):" \
       "next look in ${QUEUE_POLL:-120} s"
  sleep "${QUEUE_POLL:-120}"
}

need_cocos() {  # the project's .venv when `cocos` is not on PATH; a clear refusal when neither has it
  if ! command -v cocos >/dev/null && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
  command -v cocos >/dev/null || { echo "cocos is not installed: pip install -e . (or activate the venv)" >&2; exit 2; }
}
run_env() {  # the environment every step runs in: offline data and Hub, one thread per process unless set
  export COCOS_DATA_DIR="${COCOS_DATA_DIR:-$(cd .. && pwd)/shared/data}"
  export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
}

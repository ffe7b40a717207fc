# Helpers shared by scripts/paper_comparison.sh and scripts/claims.sh (sourced, not run).
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

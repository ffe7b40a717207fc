#!/bin/bash
# 2-process CPU cocos train step time, before (2ed7102: per-tensor reduce, no accelerate.prepare) and after (HEAD)
cd /work/main && . .venv/bin/activate
export COCOS_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
SET="--set problems_per_step=4 --set k=2 --set max_new_tokens=64 --set eval_limit=0 --set save_every=0 --set tensorboard=false --set seed=5 --set skip_uniform_groups=false"
for v in before after; do
  if [ $v = before ]; then export PYTHONPATH=/work/before18/src; else export PYTHONPATH=/work/main/src; fi
  rm -rf /work/bench16/ddp_$v
  python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no -m cocos.cli train --config configs/cocos_cpu.yaml --out /work/bench16/ddp_$v $SET --set max_steps=3 > /work/bench16/ddp_$v.txt 2>&1
  echo "$v rc=$?" >> /work/bench16/ddp_times.txt
done

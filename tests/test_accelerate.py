"""Two processes on CPU (gloo) through `accelerate launch`: problems split across ranks, gradients
averaged, metrics gathered; the result equals one process doing the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent

SCRIPT = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer
from cocos.policy import Policy
from cocos.train.config import TrainConfig
from cocos.train.trainer import Trainer

cfg = TrainConfig(model="tiny", k=2, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0, micro_batch=4,
                  lr=1e-2, max_steps=1, eval_limit=0, autocast="none", timeout=5.0, schedule="constant", beta=0.0,
                  max_grad_norm=0.0, tensorboard=False)
tok = tiny_tokenizer()
tr = Trainer(cfg, sys.argv[1], progress=False, policy=Policy(tiny_model(tok), tok, backend="auto"),
             problems=add_problems(2), eval_problems=[])
before = {{n: p.detach().clone() for n, p in tr.model.named_parameters()}}
idx = tr.step_indices(0)
per = len(idx) // tr.world
stats = tr.train_step()
out = Path(sys.argv[1])
torch.save({{n: p.detach() for n, p in tr.model.named_parameters()}}, out / f"weights_rank{{tr.rank}}.pt")
moved = max(float((p.detach() - before[n]).abs().max()) for n, p in tr.model.named_parameters())
(out / f"stats_rank{{tr.rank}}.json").write_text(json.dumps({{**stats, "moved": moved, "world": tr.world,
    "my_tasks": [tr.problems[i].task_id for i in idx[tr.rank * per:(tr.rank + 1) * per]]}}))
print("rank", tr.rank, "of", tr.world, flush=True)
'''


def test_two_process_accelerate_launch_on_cpu(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(HERE)))
    out = tmp_path / "run"
    out.mkdir()
    # CUDA_VISIBLE_DEVICES="": on a GPU machine both processes would otherwise take cuda:0 and cuda:1 (one GPU: fails)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    # accelerate's --cpu flag runs one process unless mpirun is set up; its torchrun launcher (--multi_gpu) on
    # a machine without GPUs gives 2 processes that the trainer's Accelerator(cpu=True) joins with gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    run = subprocess.run(launch + [str(script), str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    s = [json.loads((out / f"stats_rank{r}.json").read_text()) for r in (0, 1)]
    assert [x["world"] for x in s] == [2, 2]
    # problems split across ranks: each took one of the step's two problems
    assert len(s[0]["my_tasks"]) == 1 and sorted(s[0]["my_tasks"] + s[1]["my_tasks"]) == [900, 901]
    # metrics gathered: both ranks report the same global statistics over all 2 x k=2 trajectories
    assert s[0]["n_trajectories"] == s[1]["n_trajectories"] == 4
    assert s[0]["reward@2"] == s[1]["reward@2"] and s[0]["adv_std"] == s[1]["adv_std"]
    # gradients synchronised: different samples on each rank, yet identical weights after the step
    w0, w1 = (torch.load(out / f"weights_rank{r}.pt") for r in (0, 1))
    assert s[0]["moved"] > 0
    assert all(torch.equal(w0[n], w1[n]) for n in w0)

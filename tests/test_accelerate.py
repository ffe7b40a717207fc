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
from cocos.generation.policy import Policy
from cocos.rl.config import TrainConfig
from cocos.rl.trainer import Trainer

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


REPLAY = r'''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer
from cocos.generation.policy import Policy
from cocos.rl.config import TrainConfig
from cocos.rl.trainer import Trainer

mode, out, skip = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "skip"
cfg = TrainConfig(model="tiny", k=2, turns=2, problems_per_step=4, max_new_tokens=8, temperature=1.0, lr=1e-2,
                  max_steps=2, eval_limit=0, autocast="none", timeout=5.0, schedule="constant", beta=0.05,
                  max_grad_norm=1.0, tensorboard=False, weight_decay=0.1, skip_uniform_groups=skip)
tok = tiny_tokenizer()
tr = Trainer(cfg, out / mode, progress=False, policy=Policy(tiny_model(tok), tok, backend="hf"),
             problems=add_problems(4), eval_problems=[])
sample = tr.rollout
def record(problems, step, chunk=0):  # 2 processes: sample, and keep what each rank sampled
    trajs = sample(problems, step, chunk)
    torch.save(trajs, out / f"trajs_step{{step}}_rank{{tr.rank}}.pt")
    return trajs
def replay(problems, step, chunk=0):  # 1 process: the same global batch, rank 0's groups then rank 1's
    return [t for r in (0, 1) for t in torch.load(out / f"trajs_step{{step}}_rank{{r}}.pt", weights_only=False)]
def weights():
    with tr.dist.whole_weights():  # ZeRO-3 holds a shard per rank
        return {{n: p.detach().float().clone() for n, p in tr.unwrapped.named_parameters()}}
tr.rollout = record if mode == "two" else replay
before = weights()
stats = [tr.train_step() for _ in range(2)]
torch.save({{"weights": weights(), "before": before, "trained": [s["trained_frac"] for s in stats],
            "grad_norm": [s["grad_norm"] for s in stats]}}, out / f"{{mode}}_rank{{tr.rank}}.pt")
'''

DEEPSPEED_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: {stage}
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
  zero3_save_16bit_model: true
mixed_precision: 'no'
num_machines: 1
num_processes: 1
use_cpu: false
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--main_process_port", "29518"]


def _run(cmd, env=ENV):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _replay_runs(tmp_path, skip: str):
    """2 processes (DDP) sample and train 2 steps; 1 process replays their trajectories -> (rank 0, rank 1, one)."""
    script = tmp_path / "replay.py"
    script.write_text(REPLAY.format(tests=str(HERE)))
    _run(LAUNCH + ["--multi_gpu", "--num_processes", "2", str(script), "two", str(tmp_path), skip])
    _run([sys.executable, str(script), "one", str(tmp_path), skip])
    return script, [torch.load(tmp_path / f"{name}.pt") for name in ("two_rank0", "two_rank1", "one_rank0")]


def _assert_same_training(a, b):
    assert sum(b["trained"]) > 0  # some group carried reward signal: the weights moved by gradients
    moved = max(float((w - b["before"][n]).abs().max()) for n, w in b["weights"].items())
    assert moved > 1e-3  # 2 AdamW steps at lr 1e-2: a difference of 1e-5 would be visible
    worst = max(float((a["weights"][n] - w).abs().max()) for n, w in b["weights"].items())
    assert worst < 1e-5, f"weights differ by {worst:.2e}"
    # Adam hides a gradient's scale; the norm before clipping does not (a sum over ranks instead of a mean shows)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    """The invariant of the accelerate path: 2 processes (DDP through accelerator.prepare, local backwards, one
    synced reduction per step) and 1 process given the same trajectories end 2 steps with the same weights and
    gradient norms. skip_uniform_groups on: the ranks train different numbers of groups."""
    _, (r0, r1, single) = _replay_runs(tmp_path, "skip")
    assert all(torch.equal(r0["weights"][n], r1["weights"][n]) for n in r0["weights"])  # ranks agree
    _assert_same_training(r0, single)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_equals_the_plain_step(tmp_path, stage):
    """DeepSpeed ZeRO-2 / ZeRO-3 (its CPU accelerator, 1 process: accelerate counts 1 process per rank when
    DeepSpeed runs on CPU, so several processes are for GPUs) replaying the same trajectories as the plain trainer
    ends 2 steps with the same weights and gradient norms: the engine's accumulation boundary is the step's last
    group, its clipping is max_grad_norm, nothing is lost between backwards (deepspeed 0.18 lost all but the last
    backward's gradient under ZeRO-2; cocos refuses it)."""
    pytest.importorskip("deepspeed")
    script, (_, _, single) = _replay_runs(tmp_path, "all")  # DeepSpeed trains every group
    config = tmp_path / "ds.yaml"
    config.write_text(DEEPSPEED_CONFIG.format(stage=stage))
    _run(LAUNCH + ["--config_file", str(config), "--num_processes", "1", str(script), "deepspeed", str(tmp_path), "all"],
         env={**ENV, "DS_ACCELERATOR": "cpu"})
    _assert_same_training(torch.load(tmp_path / "deepspeed_rank0.pt"), single)


RESUME = r'''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from _tiny_rl import add_problems, tiny_model, tiny_tokenizer
from cocos.generation.policy import Policy
from cocos.rl.config import TrainConfig
from cocos.rl.trainer import Trainer

out, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
cfg = TrainConfig(model="tiny", k=2, turns=2, problems_per_step=2, max_new_tokens=8, temperature=1.0, lr=1e-2,
                  max_steps=10, eval_limit=0, autocast="none", timeout=5.0, schedule="linear",
                  beta=0.05, max_grad_norm=1.0, tensorboard=False)
tok = tiny_tokenizer()
tr = Trainer(cfg, out / "run", resume=resume, progress=False, policy=Policy(tiny_model(tok), tok, backend="hf"),
             problems=add_problems(2), eval_problems=[])
def weights():
    with tr.dist.whole_weights():
        return {{n: p.detach().float().clone() for n, p in tr.unwrapped.named_parameters()}}
start = {{"step": tr.step, "weights": weights(), "lr": tr.scheduler.get_last_lr()[0]}}
for _ in range(1 if resume else 2):
    tr.train_step()
tr.save_checkpoint()
torch.save({{"start": start, "end": weights(), "step": tr.step}}, out / ("resumed.pt" if resume else "first.pt"))
'''


def test_deepspeed_checkpoint_resumes(tmp_path):
    """Under DeepSpeed the checkpoint holds the engine's state (accelerate's save_state): --resume continues at the
    saved step, from the saved weights and learning rate, and trains on."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "resume.py"
    script.write_text(RESUME.format(tests=str(HERE)))
    config = tmp_path / "ds.yaml"
    config.write_text(DEEPSPEED_CONFIG.format(stage=2))
    env = {**ENV, "DS_ACCELERATOR": "cpu"}
    for what in ("first", "resume"):
        _run(LAUNCH + ["--config_file", str(config), "--num_processes", "1", str(script), str(tmp_path), what], env=env)
    first, resumed = torch.load(tmp_path / "first.pt"), torch.load(tmp_path / "resumed.pt")
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "accelerate_state").is_dir()
    assert resumed["start"]["step"] == 2 and resumed["step"] == 3
    assert all(torch.equal(first["end"][n], w) for n, w in resumed["start"]["weights"].items())
    assert resumed["start"]["lr"] < first["start"]["lr"]  # the linear schedule went on from step 2, not from 0
    assert any(not torch.equal(resumed["end"][n], w) for n, w in resumed["start"]["weights"].items())


def test_a_cpu_run_names_deepspeeds_accelerator_instead_of_its_gpu_warning():
    """transformers asks DeepSpeed for its accelerator on every save; on a CPU run its detection would log
    "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."."""
    pytest.importorskip("deepspeed")
    code = ("from cocos.generation.device import name_deepspeed_accelerator; name_deepspeed_accelerator('cpu'); "
            "from deepspeed.accelerator import get_accelerator; print(get_accelerator()._name)")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "cpu" and "unable to detect" not in r.stdout + r.stderr
    # a setting of the user's stays (here one DeepSpeed refuses, which shows it was read)
    r = subprocess.run([sys.executable, "-c", code], env={**env, "DS_ACCELERATOR": "not-one"}, capture_output=True,
                       text=True)
    assert r.returncode != 0 and "not-one" in r.stderr

"""run_episodes on a tiny random Llama (shapes, ids, both modes) and on scripted answers (rewards, prompts)."""

from __future__ import annotations

import pytest
import torch

from cocos.data.problems import load_problems
from cocos.data.prompts import INSTRUCTION, paper_prompt
from cocos.episodes.records import Draft, Trajectory
from cocos.episodes.rollout import run_episodes, score_responses
from cocos.errors import UserError
from cocos.generation.policy import Policy
from cocos.generation.sampling import Generation, repeat_each

CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


pytestmark = pytest.mark.needs_data("mbpp")  # every test runs on the first MBPP test problems


@pytest.fixture(scope="module", autouse=True)
def _offline():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def problems():
    return load_problems("mbpp", limit=2)


@pytest.fixture(scope="module")
def policy(problems):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [p.text + "\n" + "\n".join(p.tests) + "\n" + p.reference + "\n[DONE]" for p in problems]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tk.train_from_iterator(corpus * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = CHAT
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    return Policy(LlamaForCausalLM(config), tok, backend="hf")


def _check_turn(policy, turn, problem, max_new):
    assert turn.prompt_ids == policy.encode_prompt(turn.prompt)
    assert 1 <= len(turn.completion_ids) <= max_new
    assert len(turn.outcomes) == len(problem.tests)
    assert turn.reward == turn.n_passed / len(problem.tests)


def test_trajectory_mode_shapes(policy, problems, capsys):
    trajs = run_episodes(policy, problems, turns=3, samples_per_problem=2, temperature=1.0, max_new_tokens=5,
                         seed=1, progress=False)  # fmt: skip
    assert [(t.task_id, t.sample_index, t.shared_prefix_turns) for t in trajs] == [
        (11, 0, 0), (11, 1, 0), (12, 0, 0), (12, 1, 0)
    ]
    for traj, problem in zip(trajs, [problems[0]] * 2 + [problems[1]] * 2):
        assert isinstance(traj, Trajectory) and len(traj.turns) == 3 and len(traj.rewards) == 3
        for t, turn in enumerate(traj.turns):
            _check_turn(policy, turn, problem, 5)
            assert turn.prompt == paper_prompt(problem, [x.code for x in traj.turns[:t]])
    # each sample has its own turn 1 (different objects, sampled separately)
    assert trajs[0].turns[0] is not trajs[1].turns[0]
    assert trajs[0].turns[0].completion_ids != trajs[1].turns[0].completion_ids
    assert capsys.readouterr().err == ""  # progress=False prints nothing


def test_last_turn_mode_shares_the_first_turns(policy, problems):
    trajs = run_episodes(policy, problems, turns=2, samples_per_problem=3, mode="last-turn", temperature=1.0,
                         max_new_tokens=4, seed=0, progress=False)  # fmt: skip
    assert len(trajs) == 6 and all(t.shared_prefix_turns == 1 for t in trajs)
    assert [t.sample_index for t in trajs] == [0, 1, 2, 0, 1, 2]
    first, second = trajs[:3], trajs[3:]
    assert all(t.turns[0] is first[0].turns[0] for t in first)  # turn 1 generated once per problem
    assert second[0].turns[0] is not first[0].turns[0]
    assert len({t.turns[1].prompt for t in first}) == 1
    assert len({tuple(t.turns[1].completion_ids) for t in first}) > 1  # turn 2 sampled k times
    for t in trajs:
        _check_turn(policy, t.turns[1], problems[0] if t.task_id == 11 else problems[1], 4)


def test_greedy_is_deterministic_and_chat_fewshot(policy, problems):
    a = run_episodes(policy, problems[:1], turns=2, max_new_tokens=4, prompt_format="chat", fewshot=True, progress=False)
    b = run_episodes(policy, problems[:1], turns=2, max_new_tokens=4, prompt_format="chat", fewshot=True, progress=False)
    assert [t.completion_ids for t in a[0].turns] == [t.completion_ids for t in b[0].turns]
    p1, p2 = a[0].turns[0].prompt, a[0].turns[1].prompt
    assert p1.count("<|user|>") == 4 and p1.endswith("<|assistant|>")  # 3 examples + the task
    assert p2.count("<|user|>") == 2 and INSTRUCTION.strip() in p2  # examples only before turn 1


class Scripted:
    """Answers from a table keyed by task text: lets the test know which code each turn runs."""

    tokenizer = None

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate(self, prompts, sampling, n=1):
        self.calls.append((len(prompts), sampling.seed, sampling.stop))
        turn = prompts[0].count("[CORRECT]")
        return [Generation(text=next(a[turn] for k, a in self.answers.items() if k in p), completion_ids=[1])
                for p in repeat_each(prompts, n)]


def test_rewards_prompts_and_batching_with_scripted_answers(problems):
    p11, p12 = problems
    bad = "def remove_Occ(s, ch):\n    return s.strip(ch)\n[DONE]"  # passes 2 of 3 tests
    policy = Scripted({p11.text: [bad, p11.reference + "\n[DONE] trailing"], p12.text: ["```python\n" + p12.reference + "\n```\n[DONE]", "x = ("]})
    trajs = run_episodes(policy, problems, turns=2, seed=5, progress=False)
    assert policy.calls == [(2, 5, ("[DONE]",)), (2, 6, ("[DONE]",))]  # one batched call per turn
    t11, t12 = trajs
    assert [round(r, 4) for r in t11.rewards] == [0.6667, 1.0]
    assert t12.rewards == [1.0, 0.0] and t12.turns[1].outcomes[0].status != "passed"
    assert t11.turns[1].prompt.startswith(paper_prompt(p11) + "def remove_Occ(s, ch):\n    return s.strip(ch)\n[DONE]")
    assert t12.turns[0].code == p12.reference.strip()
    # the same answers scored without a model give the same records
    again = score_responses([(p11, [bad, p11.reference + "\n[DONE]"]), (p12, [t12.turns[0].text, "x = ("])])
    assert [t.rewards for t in again] == [t11.rewards, t12.rewards]
    assert [t.turns[1].prompt for t in again] == [t.turns[1].prompt for t in trajs]
    binary = run_episodes(policy, problems, turns=1, reward="binary", progress=False)
    assert [t.rewards for t in binary] == [[0.0], [1.0]]


def test_k_samples_are_asked_for_once_per_problem_where_they_share_a_history(problems):
    calls = []

    class Counting:
        tokenizer = None

        def generate(self, prompts, sampling, n=1):
            calls.append((len(prompts), n))
            return [Generation(text="x = 1\n[DONE]", completion_ids=[1]) for _ in repeat_each(prompts, n)]

    trajs = run_episodes(Counting(), problems, turns=3, samples_per_problem=3, progress=False)
    assert calls == [(2, 3), (6, 1), (6, 1)]  # trajectory mode: turn 1 once per problem, then once per sample
    assert [(t.task_id, t.sample_index) for t in trajs] == [(11, 0), (11, 1), (11, 2), (12, 0), (12, 1), (12, 2)]
    calls.clear()
    trajs = run_episodes(Counting(), problems, turns=3, samples_per_problem=3, mode="last-turn", progress=False)
    assert calls == [(2, 1), (2, 1), (2, 3)]  # last-turn mode: only the last turn has k samples
    assert [len(t.turns) for t in trajs] == [3] * 6


def test_an_actor_without_n_gets_each_episode_k_times(problems):
    class Plain:  # an outside actor written before `n`: write(problems, histories, sampling)
        def __init__(self):
            self.sizes = []

        def write(self, problems, histories, sampling):
            self.sizes.append(len(problems))
            return [Draft("prompt", Generation(text="x = 1\n[DONE]")) for _ in problems]

    actor = Plain()
    trajs = run_episodes(actor, problems, turns=2, samples_per_problem=3, progress=False)
    assert actor.sizes == [6, 6] and [t.sample_index for t in trajs] == [0, 1, 2] * 2


def test_bad_arguments(problems):
    with pytest.raises(UserError, match="turns: must be at least 1"):
        run_episodes(Scripted({}), problems, turns=0, progress=False)
    with pytest.raises(UserError, match="mode: must be one of trajectory, last-turn"):
        run_episodes(Scripted({}), problems, mode="all", progress=False)
    with pytest.raises(UserError, match="reward"):
        run_episodes(Scripted({}), problems, reward="dense", progress=False)

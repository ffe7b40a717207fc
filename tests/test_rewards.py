import pytest

from cocos.episodes.rewards import accumulated_reward, turn_reward


def test_turn_reward_kinds():
    assert turn_reward(2, 3, "progressive") == pytest.approx(2 / 3)
    assert turn_reward(2, 3, "binary") == 0.0
    assert turn_reward(3, 3, "binary") == 1.0
    with pytest.raises(ValueError, match="reward kind"):
        turn_reward(1, 1, "nope")
    with pytest.raises(ValueError):
        turn_reward(0, 0)


@pytest.mark.parametrize(
    "rewards,gamma,expected",
    [
        ([0.4], 0.5, 0.4),  # T=1: R = r_1 whatever gamma
        ([0.4], 2.0, 0.4),
        ([0.2, 1.0], 0.5, 0.5 * 0.2 + 1.0 - 0.2),  # T=2: gamma r1 + r2 - r1
        ([0.2, 1.0], 0.0, 0.8),  # only the improvement counts
        ([0.2, 1.0], 1.0, 1.0),  # r_T
        ([0.2, 1.0], 2.0, 2 * 0.2 + 0.8),
        ([1.0, 0.0], 0.5, 0.5 - 1.0),  # a regression is punished
        # T=3: gamma^2 r1 + gamma (r2 - r1) + (r3 - r2)
        ([0.2, 0.6, 0.8], 0.5, 0.25 * 0.2 + 0.5 * 0.4 + 0.2),
        ([0.2, 0.6, 0.8], 0.0, 0.2),
        ([0.2, 0.6, 0.8], 1.0, 0.8),
        ([0.2, 0.6, 0.8], 2.0, 4 * 0.2 + 2 * 0.4 + 0.2),
    ],
)
def test_accumulated_reward(rewards, gamma, expected):
    assert accumulated_reward(rewards, gamma) == pytest.approx(expected)

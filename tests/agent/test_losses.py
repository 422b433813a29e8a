"""Eq. 1 (log form), 7, 8, 9-10 and the entropy term against hand-computed values."""

import math

import pytest
import torch

from budget_edge.agent.losses import advantage, entropy_bonus, log_prob, policy_loss, value_loss


def test_log_prob_is_sum_of_bernoulli_logs() -> None:
    probs = torch.tensor([[0.8, 0.5, 0.1]])
    actions = torch.tensor([[1.0, 0.0, 0.0]])
    # log 0.8 + log 0.5 + log 0.9 = -0.22314355 - 0.69314718 - 0.10536052
    torch.testing.assert_close(log_prob(probs, actions), torch.tensor([-1.02165125]))


def test_log_prob_leaves_out_forced_components() -> None:
    probs = torch.tensor([[0.8, 0.5, 0.1]])
    actions = torch.tensor([[1.0, 0.0, 0.0]])
    controlled = torch.tensor([False, True, True])
    torch.testing.assert_close(log_prob(probs, actions, controlled), torch.tensor([-0.79850770]))


def test_advantage_is_reward_minus_value_without_critic_gradient() -> None:
    value = torch.tensor([0.25, -0.5], requires_grad=True)
    got = advantage(torch.tensor([1.0, -2.0]), value)
    torch.testing.assert_close(got, torch.tensor([0.75, -1.5]))
    assert not got.requires_grad


def test_policy_loss_and_its_gradient() -> None:
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([0.75, -1.5])
    loss = policy_loss(logp, adv)
    # -(0.75 * -1 + -1.5 * -2) / 2 = -(−0.75 + 3) / 2
    assert loss.item() == pytest.approx(-1.125)
    loss.backward()
    assert logp.grad is not None
    torch.testing.assert_close(logp.grad, torch.tensor([-0.375, 0.75]))  # -A / N


def test_value_loss_is_smooth_l1() -> None:
    reward = torch.tensor([1.0, -2.0, 0.0])
    value = torch.tensor([0.5, 0.5, 0.0])
    # |x| = 0.5 -> 0.5 * 0.25 = 0.125; |x| = 2.5 -> 2.5 - 0.5 = 2.0; 0 -> 0; mean = 2.125 / 3
    assert value_loss(reward, value).item() == pytest.approx(2.125 / 3)


def test_entropy_bonus() -> None:
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    # row 1: 2 ln 2 = 1.3862944; row 2: ~0; mean over 2 rows
    assert entropy_bonus(probs).item() == pytest.approx(math.log(2), abs=1e-5)
    controlled = torch.tensor([False, True])
    assert entropy_bonus(probs, controlled).item() == pytest.approx(math.log(2) / 2, abs=1e-5)

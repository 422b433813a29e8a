"""The Python API refuses the numbers the CLI refuses: NaN, infinity, impossible seeds."""

import math

import pytest

from budget_edge.errors import ConfigError, TrainingError
from budget_edge.train.allocator import AllocatorConfig
from budget_edge.train.budgetnet import BudgetNetConfig
from budget_edge.train.divergence import stop_if_diverged
from budget_edge.train.pretrain import PretrainConfig


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (PretrainConfig(lr=math.inf), "--lr must be a finite number, got inf"),
        (PretrainConfig(warmup_epochs=math.nan), "--warmup-epochs must be a finite number"),
        (PretrainConfig(seed=2**70), "--seed must be in [0, 4294967295]"),
        (BudgetNetConfig(gamma=math.inf), "--gamma must be a finite number"),
        (BudgetNetConfig(value_coef=math.nan), "--value-coef must be a finite number"),
        (BudgetNetConfig(budget_epochs=math.nan), "--budget-epochs must be a finite number"),
        (BudgetNetConfig(eval_budgets=(0.5, math.nan)), "--eval-budgets must be a finite number"),
        (BudgetNetConfig(entropy_coef=-1.0), "--entropy-coef must be >= 0"),
        (BudgetNetConfig(beta=-1.0), "--beta must be > 0"),
        (BudgetNetConfig(prior_sharpness=0.0), "--prior-sharpness must be > 0"),
        (BudgetNetConfig(forced_epochs=-2.0), "--forced-epochs must be >= 0"),
        (BudgetNetConfig(seed=-1), "--seed must be in [0, 4294967295]"),
        (AllocatorConfig(lr=math.nan), "--lr must be a finite number"),
        (AllocatorConfig(seed=2**33), "--seed must be in"),
    ],
)
def test_settings_no_run_can_use_are_refused(config, words):
    with pytest.raises(ConfigError) as caught:
        config.check()
    assert words in str(caught.value)


def test_the_defaults_pass():
    PretrainConfig().check()
    BudgetNetConfig().check()
    AllocatorConfig().check()


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_a_loss_that_is_not_a_number_stops_the_run(loss):
    with pytest.raises(TrainingError, match=r"became .* in epoch 3: .*\(last.pt holds epoch 2\)"):
        stop_if_diverged(loss, where="in epoch 3", kept="last.pt holds epoch 2")


def test_a_finite_loss_goes_on():
    stop_if_diverged(1e30, where="in epoch 1", kept="nothing")

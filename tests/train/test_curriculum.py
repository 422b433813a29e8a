"""The curriculum's two schedules: forced components and the budget range."""

import pytest
import torch

from budget_edge.errors import ConfigError
from budget_edge.train.curriculum import Curriculum, controlled_components, force_on


def test_forced_components_one_per_epoch_like_the_reference() -> None:
    cur = Curriculum(num_components=9, forced_epochs=8, budget_epochs=4)
    assert [cur.forced_components(t) for t in range(10)] == [8, 7, 6, 5, 4, 3, 2, 1, 0, 0]


def test_forced_components_within_an_epoch_and_custom_start() -> None:
    cur = Curriculum(num_components=9, forced_epochs=8, budget_epochs=4)
    assert cur.forced_components(0.5) == 8  # ceil(8 * 0.9375) = ceil(7.5)
    cur = Curriculum(num_components=36, forced_epochs=2, budget_epochs=2, forced_start=20)
    assert [cur.forced_components(t) for t in (0, 1, 2, 3)] == [20, 10, 0, 0]


def test_no_ramp_means_no_forced_components() -> None:
    cur = Curriculum(num_components=5, forced_epochs=0, budget_epochs=0)
    assert cur.forced_components(0) == 0
    assert cur.c_min(0) == pytest.approx(0.1)


def test_c_min_shrinks_linearly_from_one_to_a_tenth() -> None:
    cur = Curriculum(num_components=9, forced_epochs=8, budget_epochs=4)
    got = [cur.c_min(t) for t in (0, 1, 2, 4, 10)]
    assert got == pytest.approx([1.0, 0.775, 0.55, 0.1, 0.1])


def test_budgets_are_uniform_in_range() -> None:
    cur = Curriculum(num_components=9, forced_epochs=8, budget_epochs=4)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(cur.sample_budgets(5, 0, gen), torch.ones(5))
    budgets = cur.sample_budgets(20000, 2, gen)
    assert budgets.min() >= 0.55
    assert budgets.max() <= 1.0
    assert budgets.mean().item() == pytest.approx(0.775, abs=0.01)


def test_controlled_and_forced_masks() -> None:
    assert controlled_components(4, 1).tolist() == [False, True, True, True]
    actions = torch.zeros(2, 4)
    assert force_on(actions, 2).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert actions.sum() == 0  # the input is not modified


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "at least one"),
        ({"forced_start": 9}, r"\[0, 8\]"),
        ({"forced_epochs": -1}, ">= 0"),
        ({"c_min_end": 0.5, "c_min_start": 0.4}, "c_min_end <= c_min_start"),
    ],
)
def test_bad_curriculum_settings(kwargs: dict, message: str) -> None:
    args = {"num_components": 9, "forced_epochs": 8, "budget_epochs": 4, **kwargs}
    with pytest.raises(ConfigError, match=message):
        Curriculum(**args)

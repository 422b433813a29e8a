"""benchmarks/investigations/reward_weights.py: gamma and omega chosen on validation."""

import json
import sys
from pathlib import Path

import pytest

from budget_edge.cli import check_command

INVESTIGATIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "investigations"
sys.path.insert(0, str(INVESTIGATIONS))

import reward_weights  # noqa: E402


def test_the_rule_keeps_usage_under_every_budget_then_takes_the_closest() -> None:
    usages = {
        "1, 0.5": {0.25: 0.44, 0.5: 0.55, 1.0: 0.89},  # overspends at c = 0.25
        "0.1, 1": {0.25: 0.06, 0.5: 0.33, 1.0: 0.89},  # under, far from the budget
        "1, 1": {0.25: 0.22, 0.5: 0.44, 1.0: 0.89},  # under, closest
        "2, 1": {0.25: 0.253, 0.5: 0.50, 1.0: 0.89},  # within the tolerance: closer still
    }
    name, why = reward_weights.choose(usages)
    assert name == "2, 1"
    assert "at or below every budget" in why
    del usages["2, 1"]
    assert reward_weights.choose(usages)[0] == "1, 1"


def test_when_every_candidate_overspends_the_least_overspending_wins() -> None:
    name, why = reward_weights.choose({"a": {0.5: 0.6}, "b": {0.5: 0.52, 1.0: 1.0}})
    assert name == "b"
    assert "overspends" in why
    assert "+0.020" in why


def test_a_candidate_trains_with_its_weights_then_resumes(tmp_path: Path) -> None:
    run = reward_weights.folder_of(tmp_path, 0.1, 1.0)
    assert run.name == "gamma0.1-omega1"
    command = reward_weights.train_command(tmp_path / "best.pt", run, 0.1, 1.0)
    assert command[command.index("--gamma") + 1] == "0.1"
    assert command[command.index("--limit-train") + 1] == "30000"
    check_command(command[3:], environ={})  # options the CLI has, values it accepts
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    resumed = reward_weights.train_command(tmp_path / "best.pt", run, 0.1, 1.0)
    assert "--resume" in resumed
    assert "--gamma" not in resumed
    check_command(resumed[3:], environ={})


def test_the_report_reads_each_agents_last_check_on_validation(tmp_path: Path) -> None:
    def history(gamma: float, omega: float, usage: list[float]) -> None:
        run = reward_weights.folder_of(tmp_path, gamma, omega)
        run.mkdir(parents=True)
        first = {"validation": {"0.5": {"usage": 0.9, "accuracy": 0.5}}}
        last = {
            "validation": {
                str(c): {"usage": u, "accuracy": 0.9} for c, u in zip((0.5, 1), usage, strict=True)
            }
        }
        (run / "history.json").write_text(json.dumps([first, last]))

    history(1.0, 1.0, [0.45, 0.9])
    history(0.1, 1.0, [0.2, 0.9])
    checks = {
        name: reward_weights.final_check(reward_weights.folder_of(tmp_path, g, o))
        for name, g, o in (("1, 1", 1.0, 1.0), ("0.1, 1", 0.1, 1.0))
    }
    assert checks["1, 1"][0.5]["usage"] == pytest.approx(0.45)  # the last epoch, not the first
    result = reward_weights.report(tmp_path, checks)
    assert result["chosen"] == "1, 1"
    text = (tmp_path / "choice.md").read_text()
    assert "| 1, 1 (chosen) | 0.45 / 0.90 | 90.0% / 90.0% |" in text
    assert json.loads((tmp_path / "choice.json").read_text())["chosen"] == "1, 1"


def test_a_finished_candidate_is_read_not_trained_again(tmp_path: Path) -> None:
    run = tmp_path / "gamma1-omega1"
    assert not reward_weights.finished(run)
    run.mkdir()
    (run / "history.json").write_text(json.dumps([{}] * 9))  # stopped after 9 epochs
    assert not reward_weights.finished(run)
    (run / "history.json").write_text(json.dumps([{}] * reward_weights.EPOCHS))
    assert reward_weights.finished(run)  # no weights needed: they are not committed

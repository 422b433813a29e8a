"""The fair comparison's measurement plan: every stage a command the CLI accepts."""

import sys
from pathlib import Path

import click

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import fair_front  # noqa: E402

from budget_edge.cli import check_command, cli  # noqa: E402


def test_every_stage_uses_options_its_command_has() -> None:
    """A typo in an option would surface only when training has finished, hours later."""
    plan = fair_front.stages()
    assert [s.name for s in plan][:3] == ["agent", "allocate", "export"]
    for stage in plan:
        if stage.command[:3] != fair_front.CLI:
            continue  # sub_networks.py: its own argparse
        name, *args = stage.command[3:]
        command = cli.get_command(click.Context(cli), name)
        assert command is not None, name
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        used = {a for a in args if a.startswith("--")}
        assert used <= known, f"{stage.name}: {sorted(used - known)}"
        # Parsing checks values too (a budget list, a batch list), then the command's
        # own rules between options (check_options); nothing runs.
        check_command(stage.command[3:], environ={})


def test_a_stage_waits_for_its_training_run(monkeypatch) -> None:
    """best.pt exists from the first epoch on: the stage must also wait for the last."""
    zoo8 = next(s for s in fair_front.stages() if s.name == "zoo resnet8-s0")
    best = Path(zoo8.needs[0])
    assert best.name == "best.pt"
    assert "resnet8-s0" in best.parts
    assert best.exists()  # committed, mid-training
    monkeypatch.setattr(fair_front, "finished", lambda run: run != "resnet8-s0")
    assert not fair_front.ready(zoo8)
    monkeypatch.setattr(fair_front, "finished", lambda run: True)
    assert fair_front.ready(zoo8)


def test_the_model_is_measured_with_and_without_fine_tuning_against_one_zoo() -> None:
    plan = {s.name: s for s in fair_front.stages()}
    assert len(plan) == len(fair_front.stages())  # names are unique: --list shows each
    assert "curriculum.pt" in plan["allocate (no fine-tuning)"].command[4]
    assert "budgetnet.pt" in plan["allocate"].command[4]
    zoo = [s.command[s.command.index("--zoo") + 1] for s in plan.values() if "--zoo" in s.command]
    bench_zoos = [z for z in zoo if "artifacts" in z]
    assert len(bench_zoos) == 4  # fine-tuned, not, with validation weights, from plain
    assert len(set(bench_zoos)) == 1


def test_the_sandwich_from_the_plain_network_gets_its_own_agent_and_front(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(fair_front, "FRONT", tmp_path)  # no agent trained yet: no resume
    plan = {s.name: s for s in fair_front.stages()}
    agent = plan["agent (from plain)"].command
    assert agent[agent.index("--checkpoint") + 1] == str(fair_front.FROM_PLAIN / "best.pt")
    assert fair_front.REWARD_CHOICE in plan["agent (from plain)"].needs  # validation's weights
    allocated = plan["allocate (from plain)"].command[4]
    assert "agent-from-plain" in allocated
    bench = plan["bench (from plain)"]
    assert bench.done.parent.name == "bench-from-plain"
    assert "sandwich-resnet56-from-plain" in bench.command[4]


def test_the_sub_networks_wait_for_every_seed_of_the_zoo_and_only_the_zoo() -> None:
    assert set(fair_front.ZOO) < set(fair_front.ZOO_SEEDS)  # the s0 runs and more seeds
    assert "resnet20-s0-60ep" not in fair_front.ZOO_SEEDS  # another recipe
    assert "resnet56-s0" not in fair_front.ZOO_SEEDS  # the full network's comparison
    subnets = next(s for s in fair_front.stages() if s.name == "subnets")
    zoo = subnets.command[subnets.command.index("--zoo") + 1].split(",")
    assert [Path(z).parent.name for z in zoo] == fair_front.ZOO_SEEDS
    assert all(Path(z) in subnets.needs for z in zoo)


def test_the_agent_stage_resumes_with_only_what_resume_accepts(tmp_path, monkeypatch) -> None:
    """A session ends mid-run: the next one must resume the agent, not be refused for
    giving --checkpoint and --data with --resume."""
    monkeypatch.setattr(fair_front, "FRONT", tmp_path)
    for started in (False, True):
        if started:
            (tmp_path / "agent").mkdir()
            (tmp_path / "agent" / "last.pt").write_bytes(b"")
        command = next(s for s in fair_front.stages() if s.name == "agent").command
        assert ("--resume" in command) is started
        # The first front's agent was trained with the defaults of the time (1, 1, since
        # moved): its stage names them, so it rebuilds what was measured.
        assert ("--omega" in command) is not started  # a resume keeps the run's own
        if not started:
            assert command[command.index("--omega") + 1] == "1"
        check_command(command[3:], environ={})  # the CLI's own rules, nothing runs


def test_every_method_is_benched_on_one_thread_in_one_run() -> None:
    """The router (the artifact's mode), the paper's agent, the count table and the zoo."""
    benches = [stage for stage in fair_front.stages() if "bench" in stage.command]
    assert len(benches) == 4  # with and without fine-tuning, validation weights, from plain
    for stage in benches:
        if "bench" in stage.command:
            assert stage.command[stage.command.index("--threads") + 1] == "1", stage.name
            assert stage.command[stage.command.index("--also-mode") + 1] == "greedy"
            assert {"--count-table", "--zoo"} <= set(stage.command)


def test_a_named_stage_runs_again_to_rebuild_its_output(tmp_path, monkeypatch, capsys) -> None:
    """A README's numbers come from a done stage: `--stage NAME` reruns just that one."""
    import subprocess

    import pytest

    done, waiting = tmp_path / "front.json", tmp_path / "never"
    done.write_text("{}")
    plan = [
        fair_front.Stage("bench", done, [], ["bench"]),
        fair_front.Stage("export", tmp_path / "manifest.json", [], ["export"]),
        fair_front.Stage("late", tmp_path / "late.json", [waiting], ["late"]),
    ]
    monkeypatch.setattr(fair_front, "stages", lambda: plan)
    ran: list[list[str]] = []
    monkeypatch.setattr(
        subprocess, "run", lambda cmd: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    monkeypatch.setattr(sys, "argv", ["fair_front.py"])
    fair_front.main()
    assert ran == [["export"]]  # a done stage is kept, a waiting one waits
    ran.clear()
    monkeypatch.setattr(sys, "argv", ["fair_front.py", "--stage", "bench"])
    fair_front.main()
    assert ran == [["bench"]]  # done, named: again; nothing else
    monkeypatch.setattr(sys, "argv", ["fair_front.py", "--stage", "late"])
    fair_front.main()
    assert ran == [["bench"]]  # named but its inputs are missing: still waits
    assert "late" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["fair_front.py", "--stage", "bnech"])
    with pytest.raises(SystemExit, match="no stage 'bnech'; stages: bench, export, late"):
        fair_front.main()


def test_the_agent_is_trained_again_with_the_weights_chosen_on_validation(
    tmp_path, monkeypatch
) -> None:
    """Target 5: the defaults gamma = omega = 1 were chosen on test images; the front is
    measured again with the agent trained under reward_weights.py's choice."""
    import json

    choice = tmp_path / "choice.json"
    monkeypatch.setattr(fair_front, "REWARD_CHOICE", choice)
    # A fresh front: the committed agent there has a last.pt, so its stage would resume.
    monkeypatch.setattr(fair_front, "FRONT", tmp_path / "front")
    assert fair_front.reward_options(choice) == []  # not chosen yet: the stage waits
    plan = {s.name: s for s in fair_front.stages()}
    assert choice in plan["agent (validation weights)"].needs
    choice.write_text(json.dumps({"chosen": "1, 0.5"}))
    command = {s.name: s for s in fair_front.stages()}["agent (validation weights)"].command
    assert command[command.index("--gamma") + 1] == "1"
    assert command[command.index("--omega") + 1] == "0.5"
    check_command(command[3:], environ={})
    bench = {s.name: s for s in fair_front.stages()}["bench (validation weights)"]
    assert "sandwich-resnet56-validation-weights" in bench.command[4]
    agent = tmp_path / "front" / "agent-validation-weights"
    agent.mkdir(parents=True)
    (agent / "last.pt").write_bytes(b"")
    resumed = {s.name: s for s in fair_front.stages()}["agent (validation weights)"].command
    assert "--resume" in resumed  # the run's own gamma and omega, from its last.pt
    assert "--omega" not in resumed

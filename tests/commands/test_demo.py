"""`budget-edge demo`: every stage runs for real (smoke preset), and a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from budget_edge.cli import cli, main
from budget_edge.commands import demo

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
needs_committed = pytest.mark.skipif(
    not (demo.COMMITTED.is_file() and demo.COMMITTED_ZOO.is_file()),
    reason="the committed checkpoints are not here (an install without the repository)",
)
AFTER_PRETRAINING = [
    "train",
    "allocate",
    "evaluate",
    "export",
    "quantize",
    "export-zoo",
    "bench",
    "serve",
]


def test_plan_starts_from_the_checkpoint_and_benches_against_the_zoo(tmp_path: Path) -> None:
    ckpt, zoo = tmp_path / "r20.pt", tmp_path / "r8.pt"
    stages = demo.plan(tmp_path, None, demo.PRESETS["demo"], checkpoint=ckpt, zoo=zoo)
    assert [s.name for s in stages] == AFTER_PRETRAINING
    by_name = {s.name: s for s in stages}
    # Each stage reads what the one before it wrote.
    assert str(ckpt) in by_name["train"].args
    assert str(tmp_path / "budgetnet" / "budgetnet.pt") in by_name["allocate"].args
    allocated = str(tmp_path / "budgetnet" / "allocated.pt")
    assert allocated in by_name["evaluate"].args
    assert allocated in by_name["export"].args
    artifact = str(tmp_path / "artifact")
    assert artifact in by_name["quantize"].args
    assert artifact in by_name["serve"].args
    assert str(zoo) in by_name["export-zoo"].args
    bench = by_name["bench"].args
    assert bench[bench.index("--zoo") + 1] == str(tmp_path / "zoo-artifact")
    assert bench[bench.index("--data") + 1] == "fashion-mnist"  # so the table has accuracy
    # The evaluation, the export and the bench show the per-image allocation by default,
    # as a user's own commands would: no --mode, no --fuse-top.
    for stage in stages:
        assert "--mode" not in stage.args
        assert "--fuse-top" not in stage.args


def test_plan_from_scratch_pretrains_the_backbone_and_the_zoo_member(tmp_path: Path) -> None:
    stages = demo.plan(tmp_path, None, demo.PRESETS["demo"], "resnet20")
    assert [s.name for s in stages] == ["pretrain", "pretrain-zoo", *AFTER_PRETRAINING]
    by_name = {s.name: s for s in stages}
    assert str(tmp_path / "pretrain" / "best.pt") in by_name["train"].args
    assert str(tmp_path / "pretrain-zoo" / "best.pt") in by_name["export-zoo"].args
    zoo_args = by_name["pretrain-zoo"].args
    assert zoo_args[zoo_args.index("--backbone") + 1] == demo.ZOO_BACKBONE


def test_until_knows_every_stage_the_plans_make(tmp_path: Path) -> None:
    assert demo.STAGES == ("pretrain", "pretrain-zoo", *AFTER_PRETRAINING)


def test_help_names_every_stage() -> None:
    text = CliRunner().invoke(cli, ["demo", "--help"], terminal_width=200).output
    for name in ["pretrain", "pretrain-zoo", *AFTER_PRETRAINING]:
        assert name in text, name


def test_without_the_committed_checkpoint_it_says_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "COMMITTED", tmp_path / "absent.pt")  # as from a wheel
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(tmp_path / "demo")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--checkpoint PATH" in err
    assert "--from-scratch" in err
    assert not (tmp_path / "demo").exists()


def test_a_folder_of_another_start_is_refused(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text('{"preset": "smoke", "source": "from scratch (x)"}\n')
    ckpt = tmp_path / "mine.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--checkpoint", str(ckpt), "--preset", "smoke", "--out", str(tmp_path)])
    assert info.value.code == 2


def _check_outputs(out: Path, zoo: str) -> None:
    report = json.loads((out / "bench" / "bench.json").read_text())
    assert {r["precision"] for r in report["rows"]} == {"fp32", "int8"}
    assert report["settings"]["mode"] == "allocate"
    zoo_rows = [r for r in report["rows"] if r["kind"] == "zoo"]
    assert [r["name"] for r in zoo_rows] == [zoo]
    assert zoo_rows[0]["accuracy"] is not None
    assert (out / "bench" / "bench.png").stat().st_size > 0
    sweep = json.loads((out / "evaluate" / "sweep.json").read_text())
    assert len(sweep["rows"]) == 4, "one evaluate row per demo budget"
    answer = json.loads((out / "serve" / "answer.json").read_text())["answer"]
    assert {o["name"] for o in answer["outputs"]} == {"CLASS", "MASK", "FLOPS"}


@needs_fmnist
@needs_committed
@pytest.mark.slow
def test_smoke_demo_from_the_committed_model_then_skips_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    main(["demo", "--preset", "smoke", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "pretrain" not in printed
    assert f"--checkpoint {demo.COMMITTED}" in printed
    assert "server stopped (exit 0)" in printed
    _check_outputs(out, "resnet8")

    # A second run finds every stage done and does nothing again.
    main(["demo", "--preset", "smoke", "--out", str(out)])
    assert capsys.readouterr().out.count("done already") == len(AFTER_PRETRAINING)


def test_fresh_refuses_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--fresh", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize("preset", sorted(demo.PRESETS))
@pytest.mark.parametrize("from_scratch", [False, True])
def test_every_stage_parses_and_passes_its_command_s_checks(
    tmp_path: Path, preset: str, from_scratch: bool
) -> None:
    """Each stage's arguments as its command parses them, then its check_options: a
    renamed or refused option fails here, not minutes into a demo."""
    from budget_edge.cli import check_command

    extra = {} if from_scratch else {"checkpoint": tmp_path / "r20.pt", "zoo": tmp_path / "r8.pt"}
    for stage in demo.plan(tmp_path, None, demo.PRESETS[preset], **extra):
        check_command(stage.args)

"""The user docs stay true: their command lines exist, their examples run.

- Every `budget-edge ...` line in a fenced shell block of README.md,
  docs/jetson.md, docs/checkpoints.md and docs/quantize.md is parsed by the real click command
  (subcommand, option names, choices, number types, required options). A line
  with a placeholder (`<NAME>` or `...`) is only checked for its subcommand
  and option names, like every inline `budget-edge ...` code span.
- Extras in `pip install` lines exist in pyproject.toml, and a wheel file name
  carries the package's version.
- The `pycon` blocks of docs/checkpoints.md run as doctests: against the real
  akamaster ResNet-20 (skipped when ../shared is absent) and a BlockDrop file
  made here in BlockDrop's layout.
- The Python device loop of docs/jetson.md runs, without torch, against a
  tiny artifact dir, a bench report and a fake battery capacity file.
"""

from __future__ import annotations

import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest
from runtime_artifacts import load_artifact_builder

import budget_edge
from budget_edge.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "jetson.md",
    ROOT / "docs" / "checkpoints.md",
    ROOT / "docs" / "quantize.md",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", ""}
INLINE = re.compile(r"`(budget-edge(?:\s[^`]*)?)`")
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\s]*>|\.\.\.")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "(", ")"}
HELP = {"-h", "--help"}
AKAMASTER = "resnet20-12fca82f.th"


def shared_dir() -> Path:
    """../shared next to the repository, or $BUDGET_EDGE_SHARED."""
    return Path(os.environ.get("BUDGET_EDGE_SHARED", ROOT.parent / "shared"))


# ---- finding command lines --------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def shell_lines(code: str) -> list[str]:
    """Logical lines of a shell block: backslash continuations joined."""
    return code.replace("\\\n", " ").splitlines()


def fenced_commands(text: str) -> list[str]:
    """`budget-edge ...` lines of the shell blocks."""
    lines = [
        line.strip()
        for lang, code in fenced_blocks(text)
        if lang in SHELL_LANGUAGES
        for line in shell_lines(code)
    ]
    return [line for line in lines if line.split(maxsplit=1)[:1] == ["budget-edge"]]


def inline_commands(text: str) -> list[str]:
    """`budget-edge ...` code spans outside fenced blocks."""
    return INLINE.findall(FENCE.sub("", text))


def doc_cases(kind: str) -> list[tuple[str, str]]:
    """(doc name, line) pairs for pytest ids."""
    find = fenced_commands if kind == "fenced" else inline_commands
    return [(doc.name, line) for doc in DOCS for line in find(doc.read_text())]


# ---- checking them against the click commands -------------------------------------


def command_tokens(line: str) -> list[str]:
    """shlex words up to the first shell operator, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    return words


def option_names(command: click.Command) -> set[str]:
    names = set(HELP)
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts + param.secondary_opts)
    return names


def unknown_options(words: list[str], command: click.Command) -> list[str]:
    known = option_names(command)
    options = [w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-"]
    return [name for name in options if name not in known]


def split_subcommand(words: list[str]) -> tuple[list[str], str | None, list[str]]:
    """budget-edge [group options] [subcommand [args]]."""
    assert words[0] == "budget-edge", words
    rest = words[1:]
    for i, word in enumerate(rest):
        if not word.startswith("-"):
            return rest[:i], word, rest[i + 1 :]
    return rest, None, []


def check_command_line(line: str, full_parse: bool) -> None:
    """Raise AssertionError when the line names what the CLI does not have.

    full_parse: let click parse the arguments as on the command line (types,
    choices, required options); otherwise only the names are looked up.
    """
    if full_parse:
        words = command_tokens(line)
    else:  # names only: placeholders dropped, [optional] brackets are not shell syntax here
        words = [w.strip("[]") for w in PLACEHOLDER.sub(" ", line).split()]
    group_options, name, args = split_subcommand(words)
    bad = unknown_options(group_options, cli)
    assert not bad, f"{line!r}: budget-edge has no option {bad}"
    if name is None:
        return
    assert name in COMMANDS, f"{line!r}: no subcommand {name!r} (have {sorted(COMMANDS)})"
    group_ctx = click.Context(cli, info_name="budget-edge")
    command = cli.get_command(group_ctx, name)
    assert command is not None
    bad = unknown_options(args, command)
    assert not bad, f"{line!r}: `budget-edge {name}` has no option {bad}"
    if full_parse:
        parse_like_the_shell(command, name, args, group_ctx, line)


def parse_like_the_shell(
    command: click.Command, name: str, args: list[str], parent: click.Context, line: str
) -> None:
    try:
        command.make_context(name, list(args), parent=parent)
    except click.exceptions.Exit:
        pass  # --help
    except click.UsageError as exc:
        raise AssertionError(f"{line!r}: {exc.format_message()}") from exc


@pytest.mark.parametrize(("doc", "line"), doc_cases("fenced"))
def test_fenced_command_lines_parse(doc: str, line: str) -> None:
    check_command_line(line, full_parse=not PLACEHOLDER.search(line))


@pytest.mark.parametrize(("doc", "line"), doc_cases("inline"))
def test_inline_commands_name_real_options(doc: str, line: str) -> None:
    check_command_line(line, full_parse=False)


def test_the_docs_are_scanned() -> None:
    """Guard against a parser that silently finds nothing."""
    found = {doc.name: len(fenced_commands(doc.read_text())) for doc in DOCS}
    assert found["jetson.md"] >= 8 and found["checkpoints.md"] >= 5, found
    names = {split_subcommand(command_tokens(line))[1] for _, line in doc_cases("fenced")}
    assert {"export", "train", "evaluate", "build-engines", "bench", "serve", "quantize"} <= names


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("budget-edge exprt model.pt --out a", "no subcommand 'exprt'"),
        ("budget-edge export model.pt --out a --bogus 1", "has no option ['--bogus']"),
        ("budget-edge build-engines a --precision fp8", "fp8"),
        ("budget-edge build-engines a --max-batch eight", "eight"),
        ("budget-edge export model.pt", "--out"),
        ("budget-edge --verbose bench a", "budget-edge has no option ['--verbose']"),
    ],
)
def test_the_checker_rejects_what_the_cli_rejects(line: str, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_command_line(line, full_parse=True)


def test_placeholder_lines_still_check_names() -> None:
    check_command_line("budget-edge export <CHECKPOINT> --out <DIR> ...", full_parse=False)
    with pytest.raises(AssertionError, match="--outdir"):
        check_command_line("budget-edge export <CHECKPOINT> --outdir <DIR>", full_parse=False)


def test_shell_operators_end_the_command() -> None:
    words = command_tokens("budget-edge bench a --json b.json > log.txt 2>&1  # note")
    assert words == ["budget-edge", "bench", "a", "--json", "b.json"]


# ---- pip extras and wheel names ---------------------------------------------------

EXTRAS = re.compile(r"(?:budget-edge|budget_edge\S*?\.whl|\.)\[([\w,-]+)\]")
WHEEL = re.compile(r"budget_edge-([^-\s]+)-py3-none-any\.whl")


def test_pip_extras_exist_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    named = {
        extra
        for doc in DOCS
        for lang, code in fenced_blocks(doc.read_text())
        if lang in SHELL_LANGUAGES
        for line in shell_lines(code)
        if "pip install" in line
        for group in EXTRAS.findall(line)
        for extra in group.split(",")
    }
    assert named, "no extras found: the pattern no longer matches the docs"
    assert named <= extras, f"extras not in pyproject.toml: {sorted(named - extras)}"


def test_wheel_names_carry_the_version() -> None:
    versions = {v for doc in DOCS for v in WHEEL.findall(doc.read_text())}
    assert versions == {budget_edge.__version__}


# ---- docs/checkpoints.md doctests -------------------------------------------------


def pycon_blocks() -> list[str]:
    text = (ROOT / "docs" / "checkpoints.md").read_text()
    return [code for lang, code in fenced_blocks(text) if lang == "pycon"]


def test_checkpoints_doc_lists_every_format() -> None:
    from budget_edge.models.checkpoint_formats import FORMATS

    text = (ROOT / "docs" / "checkpoints.md").read_text()
    for name in FORMATS:
        assert f"| `{name}` |" in text, f"checkpoints.md has no table row for {name}"


def write_blockdrop_r110(path: Path) -> None:
    """A BlockDrop R110 CIFAR-10 file: FlatResNet32 keys, a Policy32 agent (no budget input)."""
    import torch

    from budget_edge.agent import build_agent
    from budget_edge.models import build_backbone

    resnet = {}
    for key, value in build_backbone("resnet110", shortcut="B").state_dict().items():
        match = re.match(r"layer(\d)\.(.*)", key)
        if match:
            key = f"blocks.{int(match.group(1)) - 1}.{match.group(2)}"
        resnet[key.replace("linear.", "fc.")] = value
    agent = dict(build_agent(54).state_dict())
    for head in ("logit", "vnet"):
        agent[f"{head}.weight"] = agent[f"{head}.weight"][:, :64]
    torch.save({"resnet": resnet, "agent": agent, "epoch": 2000}, path)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cwd for the doctests: checkpoints/ with the files the doc names."""
    root = tmp_path_factory.mktemp("checkpoint-doc")
    (root / "checkpoints").mkdir()
    write_blockdrop_r110(root / "checkpoints" / "blockdrop-r110-c10.t7")
    real = shared_dir() / "pretrained" / "akamaster-cifar10" / AKAMASTER
    if real.is_file():
        (root / "checkpoints" / AKAMASTER).symlink_to(real)
    return root


@pytest.mark.parametrize("index", range(len(pycon_blocks())))
def test_checkpoints_doctests(
    index: int, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = pycon_blocks()[index]
    if AKAMASTER in code and not (checkpoint_dir / "checkpoints" / AKAMASTER).exists():
        pytest.skip("the akamaster weights (../shared/pretrained) are not here")
    monkeypatch.chdir(checkpoint_dir)
    test = doctest.DocTestParser().get_doctest(
        code, {}, f"checkpoints.md[{index}]", "docs/checkpoints.md", 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
    assert len(test.examples) >= 3


# ---- docs/jetson.md device loop -----------------------------------------------------

FAKE_CAPACITY = 45  # percent: the doc's schedule gives 0.6 (its safe budget is 0.3)
STEPS = 12

# Runs the doc's loop with torch and onnx made unimportable, then reports what it did.
RUNNER = """
import json, runpy, sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
g = runpy.run_path(sys.argv[1])
rt, result = g["rt"], g["result"]
print("REPORT " + json.dumps({
    "battery": g["battery"].budget(), "last_budget": g["budget"],
    "flops": int(result.flops[0]), "full": rt.full_flops, "base": rt.manifest.base_flops,
}))
"""


def runtime_artifacts() -> ModuleType:
    """The tiny-artifact builder of the runtime tests, loaded from its file."""
    return load_artifact_builder("_docs_runtime_artifacts")


def device_loop_code() -> str:
    text = (ROOT / "docs" / "jetson.md").read_text()
    blocks = [
        code
        for lang, code in fenced_blocks(text)
        if lang == "python" and "BudgetRuntime.load(" in code
    ]
    assert len(blocks) == 1, "jetson.md should have one Python device loop"
    return blocks[0]


def set_constant(code: str, name: str, value: object) -> str:
    """Replace the doc's `NAME = ...` line; exactly one must exist."""
    pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
    assert len(pattern.findall(code)) == 1, f"the doc's code has no single {name} = line"
    return pattern.sub(f"{name} = {value!r}", code)


def write_bench_report(artifact: Path, path: Path) -> None:
    """A small real `budget-edge bench --batch 1 --json` report of the artifact."""
    from budget_edge.bench.measure import BenchSettings, load_bench_data, run_bench
    from budget_edge.bench.report import write_json
    from budget_edge.runtime import BudgetRuntime

    with BudgetRuntime.load(artifact, backend="onnxruntime", threads=1) as rt:
        data = load_bench_data("random", rt, eval_images=16)
        settings = BenchSettings(
            budgets=[0.25, 0.5, 1.0], batches=[1], warmup=1, iterations=3, rounds=1
        )
        write_json(run_bench(rt, data, settings, threads=1), path)


def test_jetson_device_loop_runs_without_torch(tmp_path: Path) -> None:
    artifacts = runtime_artifacts()
    artifact = tmp_path / "artifact"
    artifacts.write_artifact(artifacts.make_net("resnet"), artifact)
    bench = tmp_path / "bench-b1.json"
    write_bench_report(artifact, bench)
    capacity = tmp_path / "capacity"
    capacity.write_text(f"{FAKE_CAPACITY}\n")

    code = device_loop_code()
    for name, value in [
        ("ARTIFACT_DIR", str(artifact)),
        ("BENCH_JSON", str(bench)),
        ("BATTERY_FILE", str(capacity)),
        ("STEPS", STEPS),
    ]:
        code = set_constant(code, name, value)
    loop = tmp_path / "loop.py"
    loop.write_text(code)
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(loop)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    report = json.loads(lines[-1].removeprefix("REPORT "))
    printed = [
        re.fullmatch(r"class\d budget=([\d.]+) latency_ms=[\d.]+", line) for line in lines[:-1]
    ]
    assert len(printed) == STEPS and all(printed), done.stdout[-2000:]
    # The battery file was read (a failed read would give the safe budget 0.3) ...
    assert report["battery"] == 0.6
    # ... and no call got more than the battery allows.
    assert all(float(m.group(1)) <= 0.6 for m in printed if m)
    # cap="flops": the executed FLOPs stay under the budget, or at the all-dropped floor.
    limit = max(report["last_budget"] * report["full"], report["base"])
    assert report["flops"] <= limit + 1e-6 * report["full"]


# ---- README.md Python API ---------------------------------------------------------------


def test_readme_python_api_runs_without_torch(tmp_path: Path) -> None:
    """The README's example, pointed at a tiny artifact, in a process without torch."""
    artifacts = runtime_artifacts()
    artifact = tmp_path / "artifact"
    artifacts.write_artifact(artifacts.make_net("resnet"), artifact)
    text = (ROOT / "README.md").read_text()
    blocks = [c for lang, c in fenced_blocks(text) if lang == "python" and "BudgetRuntime" in c]
    assert len(blocks) == 1, "README.md should have one Python API example"
    assert len(blocks[0].strip().splitlines()) <= 12  # a short example, as promised
    code = set_constant(blocks[0], "ARTIFACT_DIR", str(artifact))
    script = tmp_path / "example.py"
    script.write_text(
        'import sys\nsys.modules["torch"] = None\nsys.modules["onnx"] = None\n' + code
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.fullmatch(r"greedy \d+ \d+% of the FLOPs\n", done.stdout), done.stdout


def test_the_docs_index_lists_every_document() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)]+)\)", index))
    present = {p.name for p in (ROOT / "docs").iterdir() if p.name != "README.md"}
    assert present <= linked, f"not in docs/README.md: {sorted(present - linked)}"
    assert linked <= present, f"dead links in docs/README.md: {sorted(linked - present)}"

"""The user docs stay true: their command lines exist, their examples run.

- Every `budget-edge ...` command in a fenced shell block of README.md and every
  docs/*.md (also after `&&`, `|`, `;`, behind `VAR=value` or a path such as
  `.venv/bin/budget-edge`, and `-m budget_edge.cli`) is parsed by the real click
  command as the shell would pass it (subcommand, option names, choices, number
  types, required options), then given to the command's own `check_options`, the
  function each command calls before any work for what click cannot state alone (a
  non-loopback `serve --host` without a token, TLS halves, a budget spec, `--resume`
  with settings, int8 without calibration data, mutually exclusive options). A line
  with a placeholder (`<NAME>` or `...`) is only checked for its subcommand and
  option names, like every inline `budget-edge ...` code span.
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
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from runtime_artifacts import load_artifact_builder

import budget_edge
from budget_edge.cli import COMMANDS, check_command, cli
from budget_edge.errors import BudgetEdgeError

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", ""}
INLINE = re.compile(r"`(budget-edge(?:\s[^`]*)?)`")
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\s]*>|\.\.\.")
OPERATOR_CHARS = set("();<>|&")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
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


def shell_commands(line: str) -> list[tuple[dict[str, str], list[str]]]:
    """(environment assignments, words) of each simple command of a shell line: split
    at | || & && ; ( ) and $( ..., redirections and their targets dropped, comments
    dropped, quotes removed as the shell removes them."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[tuple[dict[str, str], list[str]]] = []
    env: dict[str, str] = {}
    words: list[str] = []
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token and set(token) <= OPERATOR_CHARS:
            if "<" in token or ">" in token:  # a redirection: `2>&1`, `> log`
                if words and words[-1].isdigit():
                    words.pop()  # the file descriptor before it
                i += 2  # its target
                continue
            commands.append((env, words))
            env, words = {}, []
        elif token == "$":  # the `$` of `$(`: the `(` ends the command before it
            pass
        elif not words and ASSIGNMENT.match(token):
            name, value = token.split("=", 1)
            env[name] = value
        else:
            words.append(token)
        i += 1
    commands.append((env, words))
    return [(env, words) for env, words in commands if words]


def budget_edge_words(words: list[str]) -> list[str] | None:
    """['budget-edge', args...] when the command runs budget-edge (under any path,
    or as `python -m budget_edge.cli` / `torchrun ... -m budget_edge.cli`), else None."""
    if words[0].rsplit("/", 1)[-1] == "budget-edge":
        return ["budget-edge", *words[1:]]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "budget_edge.cli":
            return ["budget-edge", *words[i + 2 :]]
    return None


def runs_budget_edge(line: str) -> bool:
    if "budget-edge" not in line and "budget_edge.cli" not in line:
        return False
    try:
        cleaned = PLACEHOLDER.sub(" ", line)
        return any(budget_edge_words(words) for _, words in shell_commands(cleaned))
    except ValueError:  # not shell (an unbalanced quote in prose)
        return False


def fenced_commands(text: str) -> list[str]:
    """Lines of the shell blocks that run budget-edge."""
    lines = [
        line.strip()
        for lang, code in fenced_blocks(text)
        if lang in SHELL_LANGUAGES
        for line in shell_lines(code)
    ]
    return [line for line in lines if runs_budget_edge(line)]


def inline_commands(text: str) -> list[str]:
    """`budget-edge ...` code spans outside fenced blocks."""
    return INLINE.findall(FENCE.sub("", text))


def doc_cases(kind: str) -> list[tuple[str, str]]:
    """(doc name, line) pairs for pytest ids."""
    find = fenced_commands if kind == "fenced" else inline_commands
    return [(doc_name(doc), line) for doc in DOCS for line in find(doc.read_text())]


def doc_name(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# ---- checking them against the click commands -------------------------------------


def command_tokens(line: str) -> list[str]:
    """The words of the line's first budget-edge command (shell operators, redirections
    and comments dropped)."""
    for _, words in shell_commands(line):
        found = budget_edge_words(words)
        if found:
            return found
    raise AssertionError(f"{line!r} runs no budget-edge command")


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
    """Raise AssertionError when a budget-edge command of the line would be refused.

    full_parse: let click parse the arguments as on the command line (types,
    choices, required options), then run the command's check_options on what it
    parsed; otherwise only the subcommand and option names are looked up.
    """
    if full_parse:
        commands = shell_commands(line)
    else:  # names only: placeholders dropped, [optional] brackets are not shell syntax here
        cleaned = PLACEHOLDER.sub(" ", line)
        commands = [(env, [w.strip("[]") for w in words]) for env, words in shell_commands(cleaned)]
    found = [(env, budget_edge_words(words)) for env, words in commands]
    runs = [(env, words) for env, words in found if words]
    assert runs, f"{line!r} runs no budget-edge command"
    for env, words in runs:
        check_words(line, env, words, full_parse)


def check_words(line: str, env: dict[str, str], words: list[str], full_parse: bool) -> None:
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
        parse_like_the_shell(name, args, line, env)


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"budget_edge.commands.{COMMANDS[name][0]}")


def parse_like_the_shell(name: str, args: list[str], line: str, env: dict[str, str]) -> None:
    try:
        check_command([name, *args], env)  # the environment the line itself sets, nothing else
    except click.exceptions.Exit:
        return  # --help
    except click.UsageError as exc:
        raise AssertionError(f"{line!r}: {exc.format_message()}") from exc
    except BudgetEdgeError as exc:
        raise AssertionError(f"{line!r}: refused before any work: {exc}") from exc


@pytest.mark.parametrize(("doc", "line"), doc_cases("fenced"))
def test_fenced_command_lines_parse(doc: str, line: str) -> None:
    check_command_line(line, full_parse=not PLACEHOLDER.search(line))


@pytest.mark.parametrize(("doc", "line"), doc_cases("inline"))
def test_inline_commands_name_real_options(doc: str, line: str) -> None:
    check_command_line(line, full_parse=False)


def test_the_docs_are_scanned() -> None:
    """Guard against a parser that silently finds nothing."""
    found = {doc_name(doc): len(fenced_commands(doc.read_text())) for doc in DOCS}
    assert found["docs/jetson.md"] >= 8, found
    assert found["docs/checkpoints.md"] >= 5, found
    for doc in ("protocol", "security", "quantize", "pretrain", "budgetnet"):
        assert found[f"docs/{doc}.md"] >= 1, found
    assert found["README.md"] >= 1, found
    names = {split_subcommand(command_tokens(line))[1] for _, line in doc_cases("fenced")}
    assert {"export", "train", "evaluate", "build-engines", "bench", "serve", "quantize"} <= names
    assert {"sign", "pretrain"} <= names


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("budget-edge exprt model.pt --out a", "no subcommand 'exprt'"),
        ("budget-edge export model.pt --out a --bogus 1", "has no option ['--bogus']"),
        ("budget-edge build-engines a --precision fp8", "fp8"),
        ("budget-edge build-engines a --max-batch eight", "eight"),
        ("budget-edge export model.pt", "--out"),
        ("budget-edge --verbose bench a", "budget-edge has no option ['--verbose']"),
        # found behind a path, an assignment, `cd ... &&`, `-m budget_edge.cli`
        ("cd repo && .venv/bin/budget-edge exprt m.pt", "no subcommand 'exprt'"),
        ("OMP_NUM_THREADS=1 budget-edge bench a --batch 0", "at least 1"),
        ("torchrun --nproc_per_node 2 -m budget_edge.cli train --bogus", "['--bogus']"),
        ("make demo; budget-edge export m.pt", "--out"),
        # refused by the command's own check_options, before any work
        ("budget-edge serve a --host 0.0.0.0 --port 8000", "no access token"),
        ("budget-edge serve a --tls-cert c.pem", "both --tls-cert and --tls-key"),
        ("budget-edge serve a --budget fixed:2", "[0, 1]"),
        ("budget-edge serve a --budget watts:2", "unknown kind"),
        ("budget-edge serve a --model-name a/b", "cannot be part of a URL"),
        ("budget-edge train --out r --data fashion-mnist", "--checkpoint"),
        ("budget-edge train --out r --resume --preset paper", "--resume continues"),
        ("budget-edge quantize a --precision int8", "--calib-data"),
        ("budget-edge bench a --static-search-images 100", "labelled data"),
        (
            "budget-edge bench a --data fashion-mnist --count-table --static-search-images 9",
            "give one of them",
        ),
        ("budget-edge export m.pt --out a --static-masks random", "labelled data"),
        ("budget-edge pretrain --out r --epochs 5 --warmup-epochs 5", "--warmup-epochs"),
        ("budget-edge pretrain --out r --eval-images 0", "--eval-images must be at least 1"),
    ],
)
def test_the_checker_rejects_what_the_cli_rejects(line: str, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_command_line(line, full_parse=True)


@pytest.mark.parametrize(
    "line",
    [
        "budget-edge serve a --host 0.0.0.0 --token-file token.txt",
        "BUDGET_EDGE_TOKEN=0123456789abcdef0123 budget-edge serve a --host 0.0.0.0",
        "budget-edge serve a --host 0.0.0.0 --insecure",
        "budget-edge serve a --host 0.0.0.0 --uds /tmp/s.sock",
        "budget-edge train --out r --resume --threads 2",
        "budget-edge export m.pt --out a --calib-count 8",  # an older name still parses
    ],
)
def test_the_checker_passes_what_the_cli_runs(line: str) -> None:
    check_command_line(line, full_parse=True)


class Checked(Exception):
    """Raised by a stand-in check_options: the command reached its checks."""


def test_every_check_options_is_what_its_command_calls_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs test runs check_options; each command must run the same function before
    its work, or a documented line could pass here and be refused there. A documented
    line of each command runs with check_options replaced by one that stops it: the
    command must stop there, not fail earlier on the work (files, data, a port)."""
    from click.testing import CliRunner

    def stop(params: Any, environ: Any) -> None:
        raise Checked

    lines: dict[str, list[str]] = {}
    for _, line in doc_cases("fenced"):
        if PLACEHOLDER.search(line):
            continue
        for _, words in shell_commands(line):
            found = budget_edge_words(words)
            _, name, _ = split_subcommand(found) if found else ([], None, [])
            if name is not None and "--help" not in found:
                lines.setdefault(name, found[1:])
    monkeypatch.chdir(tmp_path)  # nothing a command might write lands in the repository
    checked = []
    for name, args in lines.items():
        module = command_module(name)
        if not hasattr(module, "check_options"):
            continue
        monkeypatch.setattr(module, "check_options", stop)
        result = CliRunner().invoke(cli, args)
        assert isinstance(result.exception, Checked), (name, args, result.output[-500:])
        checked.append(name)
    assert {"serve", "bench", "export", "quantize", "train", "pretrain"} <= set(checked)


def test_placeholder_lines_still_check_names() -> None:
    check_command_line("budget-edge export <CHECKPOINT> --out <DIR> ...", full_parse=False)
    with pytest.raises(AssertionError, match="--outdir"):
        check_command_line("budget-edge export <CHECKPOINT> --outdir <DIR>", full_parse=False)


def test_shell_operators_end_the_command() -> None:
    words = command_tokens("budget-edge bench a --json b.json > log.txt 2>&1  # note")
    assert words == ["budget-edge", "bench", "a", "--json", "b.json"]
    line = 'X=1 budget-edge bench a 2>&1 | tee log && kill $(pgrep -f "budget-edge serve a")'
    assert shell_commands(line) == [
        ({"X": "1"}, ["budget-edge", "bench", "a"]),
        ({}, ["tee", "log"]),
        ({}, ["kill"]),
        ({}, ["pgrep", "-f", "budget-edge serve a"]),
    ]


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
    assert len(printed) == STEPS, done.stdout[-2000:]
    assert all(printed), done.stdout[-2000:]
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


def test_the_protocol_doc_lists_every_serve_option() -> None:
    """docs/protocol.md's option table: every option of `budget-edge serve`, none it lacks."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `--")]
    documented = {name for cell in first_cells for name in re.findall(r"--[a-z][a-z-]*", cell)}
    serve = cli.get_command(click.Context(cli, info_name="budget-edge"), "serve")
    assert serve is not None
    options = {param.opts[0] for param in serve.params if isinstance(param, click.Option)}
    assert options - documented == set(), "not in docs/protocol.md's table"
    assert documented - options == set(), "in docs/protocol.md's table, not in serve"

"""benchmarks/ shows what a user runs: every script at its top level answers --help and
has a row in benchmarks/README.md, every row names a script there, and nothing else
sits beside them; the investigations folder keeps the same rules with its own README;
every benchmarks/ script path the docs, results and code cite exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
INVESTIGATIONS = BENCHMARKS / "investigations"
# Beside the scripts: the index, the committed results, the investigations (and the
# bytecode cache Python leaves when one script imports another).
NOT_SCRIPTS = {"README.md", "results", "investigations", "__pycache__"}
ROW = re.compile(r"^\| `(\w+\.py)` \|", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)\)")
# A script path as cited from the repository root: benchmarks/[investigations/]name.py.
# Not part of a longer path (/tmp/x/benchmarks/...) and not a placeholder (NAME.py).
CITED = re.compile(r"(?<![\w/.-])benchmarks/(?:[a-z_]+/)*[a-z0-9_]+\.py\b")
CITING = [
    "README.md",
    "docs/**/*.md",
    "benchmarks/**/*.md",
    "benchmarks/**/*.py",
    "budget_edge/**/*.py",
    "tests/**/*.py",
    "pyproject.toml",
    "Makefile",
]


def scripts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.py"))


def rows(readme: Path) -> list[str]:
    return ROW.findall(readme.read_text())


# `python SCRIPT --help` for every script given, at once: most scripts import torch, a
# few seconds of CPU each, so this interpreter imports it (and the exporter) once and
# forks a child per script, which runs the script as __main__ with the script's folder
# first on sys.path, as `python SCRIPT` does. Prints {script: [exit status, out, err]}.
HELP_RUNNER = """
import json, os, runpy, sys, tempfile, traceback
import torch, budget_edge.export.exporter
scripts, folder, children = sys.argv[1:], tempfile.mkdtemp(), {}
for i, script in enumerate(scripts):
    pid = os.fork()
    if pid:
        children[pid] = i
        continue
    status = 1
    try:
        for fd, name in ((1, "out"), (2, "err")):
            os.dup2(os.open(f"{folder}/{i}.{name}", os.O_WRONLY | os.O_CREAT, 0o600), fd)
        sys.argv, sys.path[0] = [script, "--help"], os.path.dirname(script)
        try:
            runpy.run_path(script, run_name="__main__")
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
done = {}
for _ in scripts:
    pid, status = os.wait()
    i = children[pid]
    text = [open(f"{folder}/{i}.{name}").read() for name in ("out", "err")]
    done[scripts[i]] = [os.waitstatus_to_exitcode(status), *text]
print(json.dumps(done))
"""


def test_the_top_level_is_the_scripts_its_readme_lists() -> None:
    present = {p.name for p in BENCHMARKS.iterdir()} - NOT_SCRIPTS
    listed = rows(BENCHMARKS / "README.md")
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    assert present - set(listed) == set(), "in benchmarks/ but not in its README"
    assert set(listed) - present == set(), "in benchmarks/README.md but not in benchmarks/"
    assert len(listed) >= 10  # the table was found


def test_the_investigations_readme_lists_each_one() -> None:
    present = {p.name for p in INVESTIGATIONS.iterdir()} - {"README.md", "__pycache__"}
    listed = rows(INVESTIGATIONS / "README.md")
    assert present == set(listed)
    assert len(listed) >= 5


def test_every_script_answers_help() -> None:
    found = [str(p) for p in scripts(BENCHMARKS) + scripts(INVESTIGATIONS)]
    run = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, *found],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    done = json.loads(run.stdout)
    assert sorted(done) == sorted(found)
    failed = {
        Path(script).name: (status, err[-1000:])
        for script, (status, out, err) in done.items()
        if status != 0 or not out.startswith(f"usage: {Path(script).name}")
    }
    assert failed == {}


def test_the_readmes_links_resolve() -> None:
    for readme in (BENCHMARKS / "README.md", INVESTIGATIONS / "README.md"):
        links = LINK.findall(readme.read_text())
        dead = [link for link in links if not (readme.parent / link).exists()]
        assert dead == [], f"{readme.relative_to(ROOT)}: {dead}"


def test_every_cited_script_path_exists() -> None:
    """A script moved without its citations leaves a result nobody can rerun."""
    files = {path for pattern in CITING for path in ROOT.glob(pattern)}
    cited = {
        (str(path.relative_to(ROOT)), name)
        for path in files
        for name in CITED.findall(path.read_text(errors="replace"))
    }
    assert len(cited) >= 20  # the pattern still finds citations
    missing = sorted((where, name) for where, name in cited if not (ROOT / name).is_file())
    assert missing == []

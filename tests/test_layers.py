"""The packages import downwards only: what a device installs never needs what a
workstation trains with, and no package reaches sideways into a sibling's internals."""

import ast
from pathlib import Path

import budget_edge

PACKAGE = Path(budget_edge.__file__).parent
# Lowest first. A module may import its own package and any lower layer, nothing else
# (sideways within a layer is refused too: train, export and evaluate share their
# helpers through agent/, data/ and models/, not through each other).
LAYERS = [
    {"errors"},
    {"files", "figures"},
    {"data"},
    {"runtime"},  # the device's runtime: numpy, ONNX Runtime or TensorRT
    {"bench", "agent"},
    {"models"},
    {"train", "export", "evaluate"},
    {"serve"},
    {"commands", "cli", "__init__"},
]
# The command line is one thing in two places: cli.py lists the commands, and the demo
# command runs the others through it.
SAME = {"commands": "cli"}
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
# Third-party imports the device's runtime may never make.
NOT_ON_THE_DEVICE = {"torch", "matplotlib", "rich"}


def imports(path: Path) -> list[str]:
    """Modules imported at run time (imports under `if TYPE_CHECKING:` are for types)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "budget_edge":
            found += [
                f"budget_edge.{alias.name}"
                for alias in node.names
                if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()
            ]  # the submodules among the names (`__version__` is not one)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_package_has_a_layer() -> None:
    packages = {package_of(p) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(LAYER), f"add to LAYERS: {sorted(packages - set(LAYER))}"


def test_imports_go_down_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = package_of(path)
        for module in imports(path):
            parts = module.split(".")
            if parts[0] != "budget_edge" or len(parts) < 2:
                continue
            there = parts[1]
            if SAME.get(there, there) != SAME.get(here, here) and LAYER[there] >= LAYER[here]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_runtime_imports_no_training_or_display_library() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted((PACKAGE / "runtime").rglob("*.py"))
        for module in imports(path)
        if module.split(".")[0] in NOT_ON_THE_DEVICE
    ]
    assert not wrong, "\n".join(wrong)

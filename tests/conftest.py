"""Suite-wide: every manifest.json the suite writes must match the published JSON Schema.

`write_manifest` (runtime/artifact_files.py) is the one place manifests are written; for
the whole session its write checks the text against docs/manifest.schema.json with
jsonschema, a validator that shares no code with the runtime's decoder. An exported
artifact that the schema refuses fails the test that exported it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


@pytest.fixture(scope="session", autouse=True)
def manifests_match_the_published_schema() -> Iterator[None]:
    try:
        import jsonschema
    except ImportError:  # no dev extra: tests/runtime/test_manifest_schema.py skips too
        yield
        return
    from budget_edge.runtime import artifact_files

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    write = artifact_files.atomic_write_text

    def checked_write(path: Any, text: str, **kwargs: Any) -> None:
        if Path(path).name == artifact_files.MANIFEST_NAME:
            validator.validate(json.loads(text))
        write(path, text, **kwargs)

    checked_write.checks_schema = True  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(artifact_files, "atomic_write_text", checked_write)
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a slow test first. `make test` hands whole files to its workers (one
    per core) in this order (--no-loadscope-reorder); a minute-long file handed out
    last would leave the other workers idle for that minute.

    Tests marked slow_job (the docs' slowest lines, tests/docs/test_doc_slow.py; the
    device check's dry run) run only in `make test-slow`, which sets
    BUDGET_EDGE_SLOW_TESTS=1."""
    if os.environ.get("BUDGET_EDGE_SLOW_TESTS") != "1":
        skip = pytest.mark.skip(reason="a slow job: make test-slow")
        for item in items:
            if item.get_closest_marker("slow_job"):
                item.add_marker(skip)
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within

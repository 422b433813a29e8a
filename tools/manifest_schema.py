"""Write docs/manifest.schema.json: the JSON Schema of manifest.json, generated from the
structures in budget_edge/runtime/manifest.py.

    python tools/manifest_schema.py      # after changing a structure there

tests/runtime/test_manifest_schema.py checks that the committed file is current.
"""

from __future__ import annotations

import json
from pathlib import Path

from budget_edge.runtime.manifest import manifest_schema

OUT = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


def schema_text() -> str:
    return json.dumps(manifest_schema(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {OUT}")

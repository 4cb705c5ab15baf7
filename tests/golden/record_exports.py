"""Record the golden exports (tests/golden/exports/): run from the repository root after a deliberate change.

Every bundled scenario's plan in every format it takes: a SHA-256 of each file in ``digests.yaml``, and the quick
start's files in full (``quickstart/FORMAT/...``) for review. tests/test_export.py compares both.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import yaml

import ftplan
from ftplan.errors import FtplanError
from ftplan.export import FORMATS, export_plan

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/golden/exports"


def digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    table: dict[str, dict[str, dict[str, str]]] = {}
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        campaign, plan = ftplan.campaign(path), ftplan.plan(path)
        for fmt in FORMATS:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    export_plan(campaign, plan, fmt, Path(tmp))
                except FtplanError:
                    continue
                table.setdefault(path.stem, {})[fmt] = digests(Path(tmp))
                if path.stem == "quickstart":
                    shutil.copytree(tmp, OUT / "quickstart" / fmt)
    (OUT / "digests.yaml").write_text(
        "# SHA-256 (first 16 hex digits) of every exported file; see record_exports.py\n" + yaml.safe_dump(table)
    )


if __name__ == "__main__":
    main()

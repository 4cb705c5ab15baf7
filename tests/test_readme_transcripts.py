"""The README's command transcripts are what the commands print now (``tools/readme_transcripts.py``, which runs
every ``ftplan`` transcript but the ``measure`` ones: about 20 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_readme_transcript_is_what_its_command_prints():
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_transcripts.py")], capture_output=True,
                         text=True, check=False, cwd=ROOT, env=env)  # fmt: skip
    stale = [line for line in res.stdout.splitlines() if not line.startswith("ok ")]
    assert res.returncode == 0 and res.stdout.count("\nok ") + res.stdout.startswith("ok ") >= 10, "\n".join(stale)

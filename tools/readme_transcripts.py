"""Re-run the README's `ftplan` transcripts and print the ones that no longer match their command's output.

A transcript is a ```text block whose first line is ``$ ftplan …``, or a ```bash block of one ``ftplan …``
command followed by a ```text block. A ```bash block of ``ftplan`` commands without a transcript after it runs
first, as the README's reader would (it writes the plans later transcripts read). Commands run in a temporary
directory beside links to the repository's ``scenarios``, ``tests`` and ``catalogs``; a transcript is stdout, or
stdout and stderr together, ``wrote FILE`` lines left out and the solver's wall-clock seconds ignored; a line
``...`` in a transcript stands for any lines. ``ftplan measure`` transcripts (real training
steps, minutes each, and not byte-stable) are skipped unless named.

Usage: python tools/readme_transcripts.py [TEXT ...]   (only the commands containing one of the TEXTs)
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of every fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            out.append((i + 2, lines[i][3:], lines[i + 1 : j]))
            i = j
        i += 1
    return out


def commands(body: list[str]) -> list[str]:
    """The shell commands of a block, continuation lines joined."""
    out, current = [], ""
    for line in body:
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            out.append(current.strip())
            current = ""
    return [c for c in out if c]


def matches(expected: list[str], got: list[str]) -> bool:
    """The output against a transcript whose ``...`` lines stand for any lines."""
    pattern = "".join(r"(?:.*\n)*?" if e == "..." else re.escape(e) + "\n" for e in expected)
    return re.fullmatch(pattern, "".join(g + "\n" for g in got)) is not None


def _steady(line: str) -> str:
    """A line without what differs run to run: the solver's wall-clock seconds."""
    return re.sub(r"· [0-9.]+ s ·", "· … s ·", line)


def main(only: list[str]) -> int:
    found = blocks((ROOT / "README.md").read_text())
    stale = 0
    with tempfile.TemporaryDirectory(prefix="ftplan-readme-") as tmp:
        for name in ("scenarios", "tests", "catalogs"):
            Path(tmp, name).symlink_to(ROOT / name)
        ftplan = shutil.which("ftplan") or f"{shlex.quote(sys.executable)} -m ftplan"  # (not on PATH: this Python's)
        for k, (line, lang, body) in enumerate(found):
            following = found[k + 1] if k + 1 < len(found) else None
            if lang == "text" and body and body[0].startswith("$ ftplan "):
                n = next(i for i, b in enumerate(body) if not b.endswith("\\"))  # (continued lines)
                cmd, expected = commands([body[0][2:], *body[1 : n + 1]])[0], body[n + 1 :]
            elif lang == "bash" and body and all(c.startswith("ftplan ") for c in commands(body)):
                transcript = following and following[1] == "text" and not following[2][0].startswith("$ ")
                if transcript and len(commands(body)) == 1:
                    cmd, expected, line = commands(body)[0], following[2], following[0]
                else:  # commands a later transcript depends on
                    for c in commands(body):
                        if "measure" not in c.split()[:2]:
                            subprocess.run(c.replace("ftplan", ftplan, 1), shell=True, cwd=tmp, capture_output=True)
                    continue
            else:
                continue
            skip = ("measure" in cmd.split()[:2] and not only) or (only and not any(o in cmd for o in only))
            if skip:
                continue
            run = subprocess.run(cmd.replace("ftplan", ftplan, 1), shell=True, cwd=tmp, capture_output=True, text=True)
            want = [_steady(e) for e in expected]
            outputs = (run.stdout, run.stdout + run.stderr)  # (a transcript shows stdout, or both streams)
            got = [[_steady(g) for g in o.rstrip("\n").splitlines() if not g.startswith("wrote ")] for o in outputs]
            ok = matches(want, got[0]) or matches(want, got[1])
            got = got[1]
            stale += not ok
            print(f"{'ok   ' if ok else 'STALE'} README.md:{line}: {cmd}")
            if not ok:
                for a, b in zip(expected, got, strict=False):
                    if a != b and a != "...":
                        print(f"    README: {a}\n    now:    {b}")
                        break
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

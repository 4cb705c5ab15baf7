"""The corpus of bad job, scenario and plan files (tests/bad_inputs): each gets its exit code and
one line naming the problem, never a traceback. Regenerate with tests/bad_inputs/make_corpus.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ftplan.cli.app import run

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())


def test_corpus_is_large_enough():
    assert len(CASES) >= 100
    assert {c["file"].split("_")[0] for c in CASES} == {"job", "scenario", "plan", "config", "status"}


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_bad_file(case, capsys, monkeypatch):
    monkeypatch.chdir(HERE)
    code = run([a.replace("{file}", case["file"]) for a in case["command"]])
    err = capsys.readouterr().err
    assert code == case["exit"], err
    assert "Traceback" not in err and "internal error" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    violations = [line for line in err.splitlines() if line.startswith("violation:")]
    if violations:  # `check` lists each violation, then says how many in one error line
        assert errors[0].endswith(f"{len(violations)} violation(s) of {case['command'][1]}."), err
        assert any(case["phrase"] in v for v in violations), err
    else:
        assert err.strip() == errors[0]
        assert case["phrase"] in errors[0], errors[0]


def test_the_unedited_plan_is_valid(capsys, monkeypatch):
    monkeypatch.chdir(HERE)
    assert run(["check", "base_scenario.yaml", "plan_valid.json"]) == 0, capsys.readouterr().err

"""`ftplan report`: the HTML page renders in headless Chromium with its tables and images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _ftplan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftplan", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("report")
    plan = tmp / "plan.yaml"
    assert _ftplan("plan", str(ROOT / "scenarios/quickstart.yaml"), "-o", str(plan), "-q").returncode == 0
    html = tmp / "report.html"
    res = _ftplan("report", str(ROOT / "scenarios/quickstart.yaml"), str(plan), "--html", str(html), "--compare",
                  "--pareto", "3")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return html, html.read_text()


def test_page_is_self_contained(page):
    _, text = page
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    assert text.count('src="data:image/png;base64,') == 2  # schedule and frontier
    for table in ("plan", "pools", "compare"):
        assert f'<table id="{table}">' in text
    assert 'id="verdict"' in text and "Verified" in text
    assert 'id="timing"' in text and "Chance every deadline holds: <b>" in text and "90th percentile" in text
    assert "90% band GiB" in text and "P(fit)" in text and 'class="band"' in text  # memory bands and chances


def test_page_renders_in_headless_chromium(page):
    if CHROMIUM is None:
        if os.environ.get("CI"):  # .ci/run installs it: a CI without it has not tested the page
            pytest.fail("chromium is not installed: .ci/run could not install it")
        pytest.skip("chromium is not installed (.ci/run installs it)")
    html, _ = page
    res = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--dump-dom", html.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    dom = res.stdout
    assert 'data-images-ok="yes"' in dom  # every image decoded
    plan_table = re.search(r'<table id="plan">.*?</table>', dom, re.S)
    assert plan_table and plan_table.group(0).count("<tr>") == 1 + 4  # header + 4 runs
    assert "<svg" in dom and 'id="memory"' in dom
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []


def test_report_rejects_a_plan_for_another_scenario(page, tmp_path):
    html, _ = page
    plan = html.parent / "plan.yaml"
    res = _ftplan("report", str(ROOT / "scenarios/deadline-sweep.yaml"), str(plan), "--html", str(tmp_path / "x.html"))
    assert res.returncode == 1 and "is not for" in res.stderr and not (tmp_path / "x.html").exists()

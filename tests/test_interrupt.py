"""Ctrl-C during `ftplan plan` stops the search promptly and keeps the best plan found."""

from __future__ import annotations

import os
import pty
import random
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ftplan.candidates import build_candidates
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.solver.greedy import greedy_plan

MODELS = [("qwen2.5-0.5b", "full"), ("qwen2.5-1.5b", "full"), ("llama-3.2-3b", "lora"), ("qwen2.5-7b", "lora"),
          ("llama-3.1-8b", "lora"), ("mistral-7b-v0.3", "qlora"), ("llama-3.2-1b", "full")]  # fmt: skip
POOLS = [
    {"id": "lab-a100", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 4, "usd_per_node_h": 6.0},
    {"id": "lab-h100", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 2, "usd_per_node_h": 9.0},
    {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 4},
    {"id": "runpod-h100", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 8},
]  # fmt: skip


@pytest.fixture(scope="module")
def hard_scenario(tmp_path_factory, catalog):
    """30 jobs under a deadline at 0.35 of the greedy makespan, no gap limit: CP-SAT searches for a minute."""
    rng = random.Random(30)
    jobs = []
    for i in range(30):
        model, method = rng.choice(MODELS)
        jobs.append({"id": f"job{i:02d}", "model": model, "method": method, "seq_len": 2048, "global_batch": 32,
                     "tokens": rng.choice([50_000_000, 200_000_000, 500_000_000])})  # fmt: skip
    data = {"name": "interrupt", "jobs": jobs, "pools": POOLS, "objective": {"minimise": "cost"},
            "solver": {"time_limit_s": 120, "relative_gap": 0.0, "seed": 0, "workers": 2}}  # fmt: skip
    probe = resolve_scenario(Scenario.model_validate(data), catalog, "interrupt")
    table = build_candidates(probe)
    cands = {r.id: table.by_job[r.job_id] for r in probe.runs}
    g = greedy_plan(probe, cands, "cost")
    span = max(p.start + cands[r][p.cand].minutes for r, p in g.items())
    data["objective"]["deadline_h"] = round(0.35 * span / 60, 2)
    path = tmp_path_factory.mktemp("interrupt") / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_ctrl_c_keeps_the_best_plan(hard_scenario, tmp_path):
    out = tmp_path / "plan.yaml"
    master, slave = pty.openpty()  # a terminal on stderr, so the progress line is live
    proc = subprocess.Popen([sys.executable, "-m", "ftplan", "plan", str(hard_scenario), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(slave)
    seen, t0 = b"", time.monotonic()
    while b"incumbent" not in seen and time.monotonic() - t0 < 90:  # the search has started
        if select.select([master], [], [], 1.0)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    assert b"incumbent" in seen, seen.decode(errors="replace")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    t1 = time.monotonic()
    stdout, _ = proc.communicate(timeout=60)
    os.close(master)
    assert time.monotonic() - t1 < 10  # not the 120 s time limit
    assert proc.returncode == 0
    assert "stopped by Ctrl-C" in stdout.decode()
    plan = yaml.safe_load(out.read_text())
    assert plan["solver"]["stopped_early"] is True
    check = subprocess.run([sys.executable, "-m", "ftplan", "check", str(hard_scenario), str(out)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_ctrl_c_aborts_commands_that_compare_campaigns(hard_scenario, catalog):
    from ftplan.scenario import load_scenario
    from ftplan.solver import solve_campaign

    campaign = resolve_scenario(load_scenario(hard_scenario), catalog, "interrupt")
    table = build_candidates(campaign)
    searching: list[float] = []

    def progress(p) -> None:  # the first incumbent: CP-SAT is searching; interrupt it from outside
        if not searching:
            searching.append(p.elapsed_s)
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        solve_campaign(campaign, table, progress=progress, keep_partial=False)
    assert searching and time.monotonic() - t0 < 60  # stopped by the signal, not the 120 s limit

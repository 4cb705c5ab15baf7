"""Regression tests for what a new user hit first: usage errors, odd inventories, deadlines in whole
minutes, shadowed models, forged plans, output files, limits, Ctrl-C and progress (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftplan.candidates import build_candidates
from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.plan import Plan
from ftplan.schema.scenario import Scenario
from ftplan.solver import solve_campaign
from ftplan.units import deadline_minutes
from ftplan.verify import verify_plan

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml"
SMALL = {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "global_batch": 8}


def ftplan(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftplan", *args], capture_output=True, text=True, cwd=ROOT, **kw)


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def campaign_of(data: dict, catalog):
    return resolve_scenario(Scenario.model_validate(data), catalog, "test")


# ---- 1. usage errors through the real console entry point: exit 2, one line, no traceback ----
USAGE = [
    ["memory", "--bogus"], ["plan"], ["fit", str(JOB), "--micro-batch", "abc"], ["memory", str(JOB), "--format", "xml"],
    ["nosuchcmd"], ["fit", str(JOB), "--top", "0"], ["fit", str(JOB), "--gpu-price", "-1"],
    ["fit", str(JOB), "--gpus", "0"], ["fit", str(JOB), "--efficiency", "1.5"], ["fit", str(JOB), "--by", "speed"],
    ["fit", str(JOB), "--nodes", "0"], ["fit", str(JOB), "--gpu-price", "nan"], ["plan", "x.yaml", "--deadline", "0"],
    ["plan", "x.yaml", "--budget", "-5"], ["plan", "x.yaml", "--time-limit", "inf"],
    ["compare", "x.yaml", "--pareto", "-1"],
    ["compare", "x.yaml", "--spot-interruptions-per-hour", "-1"], ["budget", "x.yaml", "--capex", "0"],
    ["report", "x.yaml", "p.yaml"], ["check", "x.yaml"], ["measure", str(JOB), "--steps", "0"],
    ["measure", str(JOB), "--device", "tpu"],
    ["catalog", "gpus", "--format", "xls"], ["catalog", "import-hf"], ["schema", "--bogus"],
]  # fmt: skip


@pytest.mark.parametrize("args", USAGE, ids=[" ".join(a[:1] + a[2:] if len(a) > 1 else a) for a in USAGE])
def test_usage_errors_exit_2_in_one_line(args):
    res = ftplan(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


def test_bad_input_exits_1_in_one_line(tmp_path):
    for args in (["memory", str(tmp_path / "missing.yaml")], ["plan", str(tmp_path / "missing.yaml")],
                 ["check", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]):  # fmt: skip
        res = ftplan(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]


# ---- 4, 19. output paths: refused before any work; files get the umask's permissions ----
def test_outputs_are_checked_before_solving(tmp_path):
    scenario = str(ROOT / "tests/bad_inputs/base_scenario.yaml")
    res = ftplan("plan", scenario, "-o", str(tmp_path))
    assert res.returncode == 1 and "is a directory" in res.stderr
    res = ftplan("plan", scenario, "-o", str(tmp_path / "p.yaml"), "--gantt", str(tmp_path / "x" / "y" / "g.png"))
    assert res.returncode == 1 and "does not exist" in res.stderr and not (tmp_path / "p.yaml").exists()


def test_a_failed_write_is_one_line(tmp_path, monkeypatch, capsys):
    """A folder that refuses the file (read-only, full, gone) is one line naming it, whoever runs it."""
    import tempfile

    from ftplan.cli.app import run

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "plan.yaml"
    code = run(["plan", str(ROOT / "tests/bad_inputs/base_scenario.yaml"), "-q", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == f"error: {out}: cannot write (Permission denied). To fix: write elsewhere."


def test_check_writable_refuses_what_cannot_be_written(tmp_path):
    from ftplan.cli.common import check_writable
    from ftplan.errors import FtplanError

    with pytest.raises(FtplanError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(FtplanError, match="does not exist"):
        check_writable(tmp_path / "missing" / "f.yaml")
    check_writable(None, tmp_path / "fine.yaml")  # nothing raised


def test_written_files_respect_the_umask(tmp_path):
    from ftplan.io import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


# ---- 5, 6. one rule: a run spans nodes only over a stated network; quotas bound instances at once ----
def test_no_network_keeps_a_run_in_one_node(catalog):
    data = {"jobs": [SMALL | {"id": "big", "method": "full", "model": "llama-3.1-8b", "tokens": 10**9,
                              "global_batch": 64}],
            "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 2}]}  # fmt: skip
    campaign = campaign_of(data, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    assert plan.runs[0].gpu_count == 8 and len(plan.runs[0].nodes) == 1
    # a hand-made 16-GPU plan over the two nodes is refused by the verifier
    with_net = campaign_of(data | {"pools": [data["pools"][0] | {"network_gbps": 800}]}, catalog)
    wide = [c for c in build_candidates(with_net).by_job["big"] if c.gpus == 16]
    assert wide, "with a network the 16-GPU layout is a candidate"
    placed = plan.runs[0].model_dump()
    c = wide[0]
    layout = placed["layout"] | {"dp": c.dp, "tp": c.tp, "zero": c.zero, "micro_batch": c.micro_batch,
                                 "grad_accum": c.grad_accum}  # fmt: skip
    placed.update(nodes=["lab/node0", "lab/node1"], gpus={"lab/node0": list(range(8)), "lab/node1": list(range(8))},
                  gpu_count=16, layout=layout)  # fmt: skip
    forged = Plan.model_validate(plan.model_dump() | {"runs": [placed]})
    assert any("spans 2 nodes" in v and "no network" in v for v in verify_plan(campaign, forged))


def test_quota_is_instances_at_once_not_nodes_per_run(catalog):
    data = {
        "jobs": [SMALL | {"id": "s", "tokens": 2 * 10**8, "count": 3}],
        "pools": [{"id": "rp", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 4}],
    }
    campaign = campaign_of(data, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    assert {r.start_h for r in plan.runs} == {0.0}  # three runs side by side on a quota of 4


# ---- 7. deadlines in whole minutes, rounded down, one conversion for solver and verifier ----
def test_deadline_conversion():
    assert deadline_minutes(2.05) == 123
    assert deadline_minutes(2.051) == 123
    assert deadline_minutes(0.1) == 6
    assert deadline_minutes(1 / 3) == 20


def test_a_deadline_check_accepts_is_one_plan_meets(catalog):
    base = {"jobs": [SMALL | {"id": "a", "method": "full", "tokens": 2 * 10**8}],
            "pools": [{"id": "lab", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 1}]}  # fmt: skip
    campaign = campaign_of(base, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    end = plan.totals.makespan_h  # a whole number of minutes
    tight = campaign_of(base | {"objective": {"minimise": "cost", "deadline_h": end}}, catalog)
    assert verify_plan(tight, plan.model_copy(update={"scenario": "test"})) == []
    solved = build_plan(tight, solve_campaign(tight))  # the planner finds a plan at exactly that deadline
    assert solved.totals.makespan_h <= end


# ---- 11. import-hf never silently replaces a model ----
def test_import_hf_refuses_to_shadow(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 512,
                                  "vocab_size": 1000}))  # fmt: skip
    user = tmp_path / "models.yaml"
    res = ftplan("catalog", "import-hf", str(config), "--id", "llama-3.1-8b", "-o", str(user))
    assert res.returncode == 1 and "already defined by the bundled catalog" in res.stderr and "--force" in res.stderr
    assert not user.exists()
    assert ftplan("catalog", "import-hf", str(config), "--id", "tiny", "-o", str(user)).returncode == 0
    res = ftplan("catalog", "import-hf", str(config), "--id", "tiny", "-o", str(user))
    assert res.returncode == 1 and f"already defined by {user}" in res.stderr
    res = ftplan("catalog", "import-hf", str(config), "--id", "llama-3.1-8b", "-o", str(user), "--force")
    assert res.returncode == 0 and "now defines llama-3.1-8b" in res.stdout


# ---- 14. every format offered works ----
@pytest.mark.parametrize("fmt", ["table", "json", "yaml", "csv"])
def test_every_format_works(fmt, tmp_path):
    scenario = "tests/bad_inputs/base_scenario.yaml"
    job = write(tmp_path / "job.yaml", yaml.safe_load(JOB.read_text()) | {"tokens": 10**8, "global_batch": 16})
    for args in (["memory", str(JOB)], ["fit", str(job), "--top", "3"], ["plan", scenario, "-q"],
                 ["catalog", "gpus", "-f", "h100"]):  # fmt: skip
        res = ftplan(*args, "--format", fmt)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        if fmt == "json":
            json.loads(out)
        elif fmt == "yaml":
            assert isinstance(yaml.safe_load(out), dict | list)
        elif fmt == "csv":
            header = out.splitlines()[0]
            assert "," in header and len({len(line.split(",")) for line in out.splitlines()[:2]}) >= 1
            assert not out.lstrip().startswith("{")
        else:
            assert "─" in out or "---" in out or "GiB" in out


# ---- 15. sizes: identical nodes cost nothing; limits refuse early ----
def test_huge_pools_plan_quickly(catalog):
    data = {
        "jobs": [SMALL | {"id": "a", "tokens": 10**8}, SMALL | {"id": "b", "tokens": 10**8}],
        "pools": [
            {"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 100_000, "network_gbps": 400},
            {"id": "cl", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 100_000},
        ],
    }
    t0 = time.monotonic()
    campaign = campaign_of(data, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    assert verify_plan(campaign, plan) == []
    assert time.monotonic() - t0 < 60  # not minutes, not gigabytes (it takes seconds)


def test_limits_refuse_in_one_line(tmp_path):
    big = {
        "jobs": [
            SMALL | {"id": "a", "tokens": 10**8, "count": 1001},
            SMALL | {"id": "b", "tokens": 10**8, "count": 1000},
        ],
        "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1}],
    }
    res = ftplan("plan", str(write(tmp_path / "s.yaml", big)))
    assert res.returncode == 1 and "at most 2,000" in res.stderr
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (5 * 2**20))
    res = ftplan("plan", str(huge))
    assert res.returncode == 1 and "larger than the 4 MiB" in res.stderr


# ---- 16. Ctrl-C before the first plan exits 130 (plan, compare, budget) ----
@pytest.mark.parametrize("command", ["plan", "compare", "budget"])
def test_ctrl_c_before_the_first_plan_exits_130(command, tmp_path):
    jobs = [
        {
            "id": f"j{i}",
            "model": m,
            "method": "lora",
            "seq_len": 512 * (1 + i % 8),
            "tokens": 10**8 + i,
            "global_batch": 64,
        }
        for i, m in enumerate(["llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3"] * 30)
    ]  # enough jobs that building their candidates outlasts the 3 s below on a fast, warm machine
    pools = [
        {"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 4, "network_gbps": 400},
        {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 4},
        {"id": "buy", "kind": "purchase", "gpu": "a100-sxm-80gb", "max_nodes": 4, "network_gbps": 400},
    ]
    scenario = write(tmp_path / "s.yaml", {"jobs": jobs, "pools": pools, "objective": {"deadline_h": 500}})
    # the child starts with Ctrl-C's default action, as from a shell, whatever an earlier test left in this
    # process (a library's worker pool may ignore SIGINT, and an ignored signal is inherited)
    proc = subprocess.Popen([sys.executable, "-m", "ftplan", command, str(scenario)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    time.sleep(3.0)  # imports done, candidates being built: no plan yet
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"


def test_an_interrupted_run_exits_130_whatever_its_teardown_does():
    """After Ctrl-C the console entry point leaves with 130 at once: a teardown that would end the process by
    SIGINT (here an exit handler that sends it) never runs."""
    child = (
        "import atexit, os, signal\n"
        "import ftplan.cli.app as app\n"
        "atexit.register(lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), os.kill(os.getpid(), signal.SIGINT)))\n"
        "app.run = lambda args=None: app.INTERRUPTED_EXIT\n"
        "print('partial output', flush=False)\n"
        "app.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert proc.returncode == 130 and proc.stdout == "partial output\n", proc.stderr
    ok = subprocess.run([sys.executable, "-c", child.replace("INTERRUPTED_EXIT", "USAGE_EXIT")], cwd=ROOT,
                        capture_output=True, text=True, timeout=60,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    assert ok.returncode == -signal.SIGINT  # (any other exit runs the teardown, as Python does: here, to its death)


def test_every_search_leaves_ctrl_c_to_the_campaigns_handler(catalog, monkeypatch):
    """CP-SAT's own SIGINT handler would take a Ctrl-C during a search (stopping that search only, where the
    campaign's handler stops the whole solve) and, in OR-Tools' SigintHandler, set SIGINT to its default when
    done: every CpSolver ftplan runs, the large-neighbourhood steps' too, switches it off."""
    from ortools.sat.python import cp_model

    from ftplan.solver import lns
    from ftplan.solver.model import build_model
    from ftplan.solver.solve import _best_greedy, _greedy_objective

    made = []
    real = cp_model.CpSolver

    def spy() -> cp_model.CpSolver:
        solver = real()
        made.append(solver)
        return solver

    monkeypatch.setattr(cp_model, "CpSolver", spy)
    data = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    camp = resolve_scenario(Scenario.model_validate(data), catalog, "quickstart")
    table = build_candidates(camp)
    solve_campaign(camp, table)
    m = build_model(camp, table)
    start = _best_greedy(m, camp, "cost")
    lns.improve(m, start, round(_greedy_objective(m, start, "cost")), "cost", budget=0.5, seed=0, stop_at=0, wall=1)
    assert len(made) >= 2 and all(not s.parameters.catch_sigint_signal for s in made)


# ---- 17. the second objective's own status and gap are in the plan ----
def test_second_objective_is_reported(catalog):
    data = {"jobs": [SMALL | {"id": "a", "tokens": 10**8}],
            "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1}],
            "objective": {"minimise": "cost", "then": "time"}}  # fmt: skip
    campaign = campaign_of(data, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    s = plan.solver
    assert s.then == "time" and s.then_status == "OPTIMAL" and s.then_gap == 0.0
    assert s.then_value == pytest.approx(plan.totals.makespan_h)
    assert verify_plan(campaign, plan) == []


# ---- 18. messages that say what is wrong ----
def test_messages_name_the_real_problem(tmp_path):
    data = {
        "jobs": [SMALL | {"id": "a", "tokens": 10**8}],
        "pools": [{"id": "c", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": "two"}],
    }
    res = ftplan("plan", str(write(tmp_path / "a.yaml", data)))
    assert "pools[0].quota_nodes" in res.stderr and "OwnedPool" not in res.stderr and "kind" not in res.stderr
    data["pools"][0] = {"id": "c", "kind": "cloud", "instance": "aws/p9", "quota_nodes": 1}
    res = ftplan("plan", str(write(tmp_path / "b.yaml", data)))
    assert "pools[0] (c).instance: unknown instance" in res.stderr and "--instance" not in res.stderr
    data["pools"][0] = {"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1, "usd_per_node_h": 1e20}
    res = ftplan("plan", str(write(tmp_path / "c.yaml", data)))
    assert res.returncode == 1 and "usd_per_node_h" in res.stderr and "MODEL_INVALID" not in res.stderr


# ---- exact boundaries of the constraints (what a one-minute slip in the model would break) ----
def test_a_run_may_end_exactly_at_its_deadline_and_start_as_its_dependency_ends(catalog):
    base = {"jobs": [SMALL | {"id": "a", "method": "full", "tokens": 2 * 10**8},
                     SMALL | {"id": "b", "method": "full", "tokens": 2 * 10**8, "depends_on": ["a"]}],
            "pools": [{"id": "lab", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 1}],
            "objective": {"minimise": "time"}}  # fmt: skip
    campaign = campaign_of(base, catalog)
    plan = build_plan(campaign, solve_campaign(campaign))
    a, b = plan.runs
    assert b.start_h == a.end_h  # no minute lost between a dependency and its dependant
    jobs = [base["jobs"][0] | {"deadline_h": a.end_h}, base["jobs"][1] | {"deadline_h": b.end_h}]
    tight = campaign_of(base | {"jobs": jobs}, catalog)
    again = build_plan(tight, solve_campaign(tight))  # each run ends exactly at its own deadline
    assert [r.end_h for r in again.runs] == [a.end_h, b.end_h]
    assert verify_plan(tight, again) == []

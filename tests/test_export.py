"""`ftplan export`: every format of every bundled scenario's plan, read back by the real tools.

DeepSpeed's own config class, accelerate's config loader, TRL's ``SFTConfig``, PEFT's ``LoraConfig`` and
transformers' ``BitsAndBytesConfig`` parse what is written (the ``exports`` extra installs them); SkyPilot's task
and resources schemas check each task (in ``.venv-sky``, which ``.ci/run`` makes: SkyPilot pins an older click
than ftplan's typer); a real Slurm (Debian's slurm-wlm, started here) accepts every batch script with
``sbatch --test-only`` and runs the quick start's first run for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slurm_cluster import SlurmCluster, unavailable
from typer.testing import CliRunner

import ftplan
from ftplan.cli.app import app
from ftplan.errors import FtplanError
from ftplan.export import FORMATS, export_plan, time_margin_of
from ftplan.export.runs import run_exports
from ftplan.memory.deepspeed import block_params

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
runner = CliRunner()


@pytest.fixture(scope="module")
def plans() -> dict[str, tuple]:
    """Every bundled scenario's campaign and verified plan (solved once)."""
    out = {}
    for path in SCENARIOS:
        campaign = ftplan.campaign(path)
        out[path.stem] = (campaign, ftplan.plan(path))
    return out


@pytest.fixture(scope="module")
def exported(plans, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every scenario in every format it can take; (scenario, format) → directory."""
    out = {}
    for name, (campaign, plan) in plans.items():
        for fmt in FORMATS:
            d = tmp_path_factory.mktemp(f"{name}-{fmt}")
            try:
                export_plan(campaign, plan, fmt, d)
            except FtplanError as exc:
                # a format refuses what it cannot express, in one line naming the run and another format
                assert "To fix: export --to" in str(exc) or "To fix: pick another format" in str(exc), str(exc)
                continue
            out[name, fmt] = d
    return out


def _runs(plans, name):
    campaign, plan = plans[name]
    return {r.dirname: r for r in run_exports(campaign, plan)}


def test_every_scenario_exports_to_torchrun_and_its_scheduler(plans, exported):
    for name, (campaign, _) in plans.items():
        assert (name, "torchrun") in exported, name
        kinds = {p.kind for p in campaign.pools}
        if kinds & {"owned", "purchase"} and any(r.pool_kind != "cloud" for r in _runs(plans, name).values()):
            assert (name, "slurm") in exported, name
    assert {fmt for _, fmt in exported} == set(FORMATS)


def test_every_planned_value_reaches_the_launch_files(plans, exported):
    """For every run of every plan: batch size, accumulation, ZeRO stage, GPUs and nodes equal the plan's."""
    for (name, _fmt), d in exported.items():
        for dirname, r in _runs(plans, name).items():
            run_dir = d / dirname
            if not run_dir.exists():
                continue
            lay = r.layout
            if (run_dir / "plan.env").exists():
                env = dict(
                    line.removeprefix("export ").split("  #")[0].split("=", 1)
                    for line in (run_dir / "plan.env").read_text().splitlines()
                    if line.startswith("export")
                )
                assert env["FTPLAN_MICRO_BATCH"] == str(lay.micro_batch)
                assert env["FTPLAN_GRAD_ACCUM"] == str(lay.grad_accum)
                assert env["FTPLAN_ZERO"] == str(lay.zero)
                assert (env["FTPLAN_TP"], env["FTPLAN_PP"]) == (str(lay.tp), str(lay.pp))
                # how the hours cut a pipeline's layers, where there is one
                assert ("FTPLAN_PIPELINE_SPLIT" in env) == (lay.pp > 1)
            if (run_dir / "ds_config.json").exists():
                ds = json.loads((run_dir / "ds_config.json").read_text())
                assert ds["train_micro_batch_size_per_gpu"] == lay.micro_batch
                assert ds["gradient_accumulation_steps"] == lay.grad_accum
                assert ds["zero_optimization"]["stage"] == lay.zero
                assert ds["train_batch_size"] == lay.micro_batch * lay.grad_accum * lay.dp
            if (run_dir / "accelerate_config.yaml").exists():
                acc = yaml.safe_load((run_dir / "accelerate_config.yaml").read_text())
                assert acc["num_processes"] == r.run.gpu_count and acc["num_machines"] == len(r.run.nodes)
            if (run_dir / "run.sbatch").exists():
                text = (run_dir / "run.sbatch").read_text()
                assert f"--nodes={len(r.run.nodes)} " in text and f"--gres=gpu:{r.nproc_per_node} " in text
                assert f"--nproc-per-node {r.nproc_per_node}" in text
            if (run_dir / "task.yaml").exists():
                task = yaml.safe_load((run_dir / "task.yaml").read_text())
                assert task["num_nodes"] == len(r.run.nodes)
                assert task["resources"]["instance_type"] == r.instance.split("/", 1)[1]
                assert task["resources"]["use_spot"] == r.spot
            assert (run_dir / "SOURCES.md").read_text().count("| runs[]") + (run_dir / "SOURCES.md").read_text().count(
                "| jobs[]"
            ) + (run_dir / "SOURCES.md").read_text().count("| pools[]") >= 3


class _DataParallel:
    """The data-parallel world DeepSpeed's config class divides the batch by (its ``mpu`` interface)."""

    def __init__(self, dp: int) -> None:
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp


def test_deepspeed_parses_every_config_with_its_batch_arithmetic(plans, exported, monkeypatch):
    deepspeed_config = pytest.importorskip("deepspeed.runtime.config", reason="the exports extra installs deepspeed")
    monkeypatch.setattr(deepspeed_config.dist, "get_rank", lambda: 0)
    seen = 0
    for (name, _fmt), d in exported.items():
        for path in d.glob("*/ds_config.json"):
            r = _runs(plans, name)[path.parent.name]
            cfg = deepspeed_config.DeepSpeedConfig(str(path), mpu=_DataParallel(r.layout.dp))
            assert cfg.train_batch_size == r.layout.micro_batch * r.layout.grad_accum * r.layout.dp
            assert cfg.zero_optimization_stage == r.layout.zero
            if r.layout.zero:  # DeepSpeed's buckets in the estimate's unit, one block (ftplan.memory.deepspeed)
                assert cfg.zero_config.reduce_bucket_size == block_params(r.arch)
                assert r.layout.zero < 3 or cfg.zero_config.max_live_parameters == 2 * block_params(r.arch)
            assert cfg.zero_config.offload_optimizer is not None or r.layout.offload == "none"
            assert cfg.bfloat16_config.enabled == (r.layout.precision == "bf16-mixed")
            seen += 1
        # a config whose batch does not divide fails DeepSpeed's own check
    bad = {"train_batch_size": 10, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2}
    with pytest.raises(AssertionError):
        deepspeed_config.DeepSpeedConfig(bad, mpu=_DataParallel(4))
    assert seen >= 5


def test_accelerate_loads_every_config(exported):
    config_args = pytest.importorskip("accelerate.commands.config.config_args", reason="the exports extra")
    seen = 0
    for (_, fmt), d in exported.items():
        if fmt != "accelerate":
            continue
        for path in d.glob("*/accelerate_config.yaml"):
            cfg = config_args.load_config_from_file(str(path))
            assert cfg.num_processes == yaml.safe_load(path.read_text())["num_processes"]
            if cfg.distributed_type == "DEEPSPEED":
                assert (path.parent / cfg.deepspeed_config["deepspeed_config_file"]).exists()
            fused = "FTPLAN_KERNELS=fused" in (path.parent / "plan.env").read_text()
            assert (cfg.dynamo_config or {}).get("dynamo_backend") == ("INDUCTOR" if fused else None)
            seen += 1
    assert seen >= 5


def test_trl_peft_and_transformers_build_their_configs(plans, exported, tmp_path):
    trl = pytest.importorskip("trl", reason="the exports extra installs trl")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    # the quick start with its LoRA job compiled (kernels: fused), beside every bundled scenario TRL can take
    data = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    next(j for j in data["jobs"] if j["id"] == "llama8b-lora")["kernels"] = "fused"
    (tmp_path / "fused.yaml").write_text(yaml.safe_dump(data))
    fused = (ftplan.campaign(tmp_path / "fused.yaml"), ftplan.plan(tmp_path / "fused.yaml"))
    export_plan(*fused, "trl", tmp_path / "fused-trl")
    plans = {**plans, "fused": fused}
    seen = set()
    here = Path.cwd()
    for (name, fmt), d in [*exported.items(), (("fused", "trl"), tmp_path / "fused-trl")]:
        if fmt != "trl":
            continue
        for run_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            r = _runs(plans, name)[run_dir.name]
            args = json.loads((run_dir / "sft_config.json").read_text())
            os.chdir(run_dir)  # the deepspeed field names ds_config.json beside it
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cfg = trl.SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, **args)  # (no GPU here)
            finally:
                os.chdir(here)
            assert cfg.per_device_train_batch_size == r.layout.micro_batch
            assert cfg.gradient_accumulation_steps == r.layout.grad_accum
            assert cfg.max_length == r.job.seq_len
            assert cfg.torch_compile == (r.job.kernels.value == "fused")  # the plan's hours assume compiled kernels
            seen.add("fused" if cfg.torch_compile else "sft")
            if (run_dir / "lora_config.json").exists():
                lora = LoraConfig(**json.loads((run_dir / "lora_config.json").read_text()))
                want = set(r.lora_targets)
                assert lora.target_modules == ("all-linear" if want == {"all-linear"} else want)
                seen.add("lora")
            if (run_dir / "bnb_config.json").exists():
                bnb = BitsAndBytesConfig(**json.loads((run_dir / "bnb_config.json").read_text()))
                assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4"
                seen.add("bnb")
    assert seen == {"sft", "fused", "lora", "bnb"}


SKY_PYTHON = Path(os.environ.get("FTPLAN_SKYPILOT_PYTHON", ROOT / ".venv-sky/bin/python"))
SKY_CHECK = """
import sys
from sky.utils import registry
from sky.utils import common_utils, schemas, yaml_utils
for path in sys.argv[1:]:
    task = yaml_utils.read_yaml(path)
    common_utils.validate_schema(task, schemas.get_task_schema(), f"{path}: ")
    common_utils.validate_schema(task["resources"], schemas.get_resources_schema(), f"{path}: resources: ")
    registry.CLOUD_REGISTRY.from_str(task["resources"]["cloud"])
print(len(sys.argv) - 1)
"""


def test_skypilot_validates_every_task(exported, tmp_path):
    if not SKY_PYTHON.exists():
        pytest.skip(f"SkyPilot is not installed at {SKY_PYTHON}: .ci/run makes .venv-sky (its click pin is older "
                    "than ftplan's typer needs)")  # fmt: skip
    tasks = [str(p) for (_, fmt), d in exported.items() if fmt == "skypilot" for p in d.glob("*/task.yaml")]
    assert len(tasks) >= 3
    ok = subprocess.run([str(SKY_PYTHON), "-c", SKY_CHECK, *tasks], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.split()[-1] == str(len(tasks))
    bad = tmp_path / "bad.yaml"
    task = yaml.safe_load(Path(tasks[0]).read_text())
    task["resources"]["use_spot"] = "sometimes"
    bad.write_text(yaml.safe_dump(task))
    assert subprocess.run([str(SKY_PYTHON), "-c", SKY_CHECK, str(bad)], capture_output=True).returncode != 0


TINY_STEP = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
x = torch.ones(1)
dist.all_reduce(x)
assert int(x.item()) == dist.get_world_size() == int(os.environ["FTPLAN_DP"]), (x, dist.get_world_size())
if dist.get_rank() == 0:
    with open(os.environ["FTPLAN_RESULT"], "w") as f:
        f.write(f"{dist.get_world_size()} {os.environ['FTPLAN_MICRO_BATCH']} {os.environ['FTPLAN_GRAD_ACCUM']}")
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, plans):
    why = unavailable()
    if why:
        pytest.skip(why)
    nodes: dict[str, int] = {}
    for campaign, _ in plans.values():
        for p in campaign.pools:
            if p.kind != "cloud":
                for k in range(p.nodes):
                    nodes[f"{p.id}-node{k}"] = p.gpus_per_node
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes, real_node="lab-h100-node0")
    cluster.start()
    yield cluster
    cluster.stop()


def test_slurm_accepts_every_exported_script(slurm, exported):
    scripts = [p for (_, fmt), d in exported.items() if fmt == "slurm" for p in d.glob("*/run.sbatch")]
    assert len(scripts) >= 10
    for path in scripts:
        out = slurm.run("sbatch", "--test-only", path.name, cwd=path.parent, env={"TRAIN_SCRIPT": "train.py"})
        assert out.returncode == 0 and "to start at" in out.stderr, (path, out.stderr)


def test_slurm_runs_the_quick_start_in_order_and_the_first_run_completes(slurm, exported, plans, tmp_path):
    d = tmp_path / "export"  # (a copy: the run writes job ids and logs beside the scripts)
    shutil.copytree(exported["quickstart", "slurm"], d)
    script = tmp_path / "step.py"
    script.write_text(TINY_STEP)
    result = tmp_path / "result.txt"
    env = {"TRAIN_SCRIPT": str(script), "FTPLAN_RESULT": str(result),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # torchrun beside this Python  # fmt: skip
    out = slurm.run("bash", str(d / "submit.sh"), env=env)
    assert out.returncode == 0, out.stderr
    ids = dict(line.split("\t") for line in (d / "jobids.tsv").read_text().splitlines())
    first = _runs(plans, "quickstart")
    assert set(ids) == {r.id for r in first.values() if r.pool_kind != "cloud"}
    import time

    deadline = time.time() + 240
    while time.time() < deadline and slurm.job_state(ids["llama8b-lora"]) in ("PENDING", "RUNNING", "CONFIGURING"):
        time.sleep(2)
    assert slurm.job_state(ids["llama8b-lora"]) == "COMPLETED", slurm.log()
    lay = first["llama8b-lora"].layout
    assert result.read_text() == f"{lay.dp} {lay.micro_batch} {lay.grad_accum}"
    later = [i for run, i in ids.items() if run != "llama8b-lora"]  # planned hours later: held by --begin
    assert all(slurm.job_state(i) == "PENDING" for i in later)
    slurm.run("scancel", *later)


def test_hf_formats_refuse_what_they_cannot_run(plans):
    campaign, plan = plans["llama405b-pipeline"]
    with pytest.raises(
        FtplanError, match=r"run sft-llama405b: .*--to trl cannot express\. To fix: export --to torchrun"
    ):
        export_plan(campaign, plan, "trl", Path("/nonexistent-never-written"))


def test_a_plan_that_breaks_its_scenario_is_not_exported(plans, tmp_path):
    campaign, plan = plans["quickstart"]
    broken = plan.model_copy(update={"runs": plan.runs[1:]})
    with pytest.raises(FtplanError, match="breaks 1 rule"):
        export_plan(campaign, broken, "torchrun", tmp_path)
    assert not any(tmp_path.iterdir())


def test_slurm_time_limits_follow_the_time_band_or_the_margin_given(plans, tmp_path):
    campaign, plan = plans["quickstart"]
    r = next(r for r in run_exports(campaign, plan) if r.id == "llama8b-lora")
    band = time_margin_of(campaign, r)
    assert band > 0
    export_plan(campaign, plan, "slurm", tmp_path / "band")
    assert f"--time={r.time_limit_minutes(band)} " in (tmp_path / "band/llama8b-lora/run.sbatch").read_text()
    export_plan(campaign, plan, "slurm", tmp_path / "fixed", time_margin=0.1)
    fixed = (tmp_path / "fixed/llama8b-lora/run.sbatch").read_text()
    assert f"--time={r.time_limit_minutes(0.1)} " in fixed and r.time_limit_minutes(0.1) < r.time_limit_minutes(band)


def test_cli_export(tmp_path, plans):
    _, plan = plans["quickstart"]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan.model_dump(mode="json")))
    scen = str(ROOT / "scenarios/quickstart.yaml")
    out = runner.invoke(app, ["export", scen, str(plan_file), "--to", "deepspeed", "-o", str(tmp_path / "ds")])
    assert out.exit_code == 0, out.output
    assert "wrote" in out.output and (tmp_path / "ds/run_node.sh").exists()
    assert os.access(tmp_path / "ds/llama8b-lora/launch.sh", os.X_OK)
    bad = runner.invoke(app, ["export", scen, str(plan_file), "--to", "kubernetes", "-o", str(tmp_path / "k")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    other = runner.invoke(app, ["export", str(ROOT / "scenarios/deadline-sweep.yaml"), str(plan_file), "--to",
                                "torchrun", "-o", str(tmp_path / "x")])  # fmt: skip
    assert other.exit_code == 1 and "Traceback" not in other.output


GOLDEN = ROOT / "tests/golden/exports"


def test_exports_equal_the_golden_ones(exported):
    """tests/golden/record_exports.py records them; a change to any generated file shows here."""
    import hashlib

    table = yaml.safe_load((GOLDEN / "digests.yaml").read_text())
    now: dict[str, dict[str, dict[str, str]]] = {}
    for (name, fmt), d in exported.items():
        now.setdefault(name, {})[fmt] = {
            str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(d.rglob("*")) if p.is_file()
        }  # fmt: skip
    assert now == table
    for fmt in FORMATS:
        d = exported["quickstart", fmt]
        for p in d.rglob("*"):
            if p.is_file():
                assert p.read_text() == (GOLDEN / "quickstart" / fmt / p.relative_to(d)).read_text(), p


def test_the_readme_shows_the_real_export():
    readme = (ROOT / "README.md").read_text()
    golden = (GOLDEN / "quickstart/slurm/llama8b-lora/run.sbatch").read_text()
    assert f"```text\n{golden}```" in readme


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"]),
    method=st.sampled_from(["full", "lora", "qlora"]),
    seq_len=st.sampled_from([1024, 2048, 4096]),
    batch=st.sampled_from([8, 16, 32]),
    count=st.integers(1, 3),
    nodes=st.integers(1, 2),
    gpu=st.sampled_from(["h100-sxm-80gb", "a100-sxm-40gb"]),
)
def test_random_plans_export_their_planned_values(tmp_path_factory, model, method, seq_len, batch, count, nodes, gpu):
    """Random small campaigns: what every launcher format writes for a run is the plan's batch, accumulation,
    ZeRO stage, GPUs and nodes (deepspeed's and TRL's where they can express the run)."""
    job = {"id": "j", "model": model, "method": method, "seq_len": seq_len, "global_batch": batch,
           "tokens": 20_000_000, "count": count}  # fmt: skip
    pool = {"id": "lab", "kind": "owned", "gpu": gpu, "nodes": nodes, "usd_per_node_h": 10.0, "network_gbps": 400}
    scenario = {"name": "random", "jobs": [job], "pools": [pool], "solver": {"time_limit_s": 5}}
    campaign, plan = ftplan.campaign(scenario), ftplan.plan(scenario)
    for fmt in ("torchrun", "deepspeed", "trl", "slurm"):
        d = tmp_path_factory.mktemp(fmt)
        try:
            export_plan(campaign, plan, fmt, d)
        except FtplanError as exc:
            assert fmt in ("deepspeed", "trl") and "export --to torchrun" in str(exc)
            continue
        for r in plan.runs:
            run_dir = d / r.run.replace("#", "-")
            lay = r.layout
            if fmt in ("torchrun", "slurm"):
                env = (run_dir / "plan.env").read_text()
                for key, value in (("MICRO_BATCH", lay.micro_batch), ("GRAD_ACCUM", lay.grad_accum),
                                   ("ZERO", lay.zero), ("DP", lay.dp), ("TP", lay.tp)):  # fmt: skip
                    assert f"export FTPLAN_{key}={value} " in env
            if fmt == "slurm":
                text = (run_dir / "run.sbatch").read_text()
                assert (
                    f"--nodes={len(r.nodes)} " in text and f"--nodelist={','.join(r.nodes).replace('/', '-')} " in text
                )
            if fmt == "deepspeed":
                ds = json.loads((run_dir / "ds_config.json").read_text())
                assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
                    lay.micro_batch,
                    lay.grad_accum,
                )
                assert ds["zero_optimization"]["stage"] == lay.zero
                assert (run_dir / "hostfile").read_text().count("slots=") == len(r.nodes)
            if fmt == "trl":
                sft = json.loads((run_dir / "sft_config.json").read_text())
                assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * lay.dp == batch


def test_an_fp8_runs_plan_env_states_its_fp8_setup(tmp_path):
    """An FP8 job's runs tell the training script the recipe, the FP8 gather and the weight cache the plan's hours
    and memory assume; other runs carry no FP8 lines."""
    fp8 = {"id": "f", "model": "llama-3.2-1b", "method": "full", "precision": "fp8", "seq_len": 2048,
           "global_batch": 16, "tokens": 20_000_000, "fp8": {"weight_cache": True}}  # fmt: skip
    bf16 = {"id": "b", "model": "llama-3.2-1b", "method": "full", "seq_len": 2048, "global_batch": 16,
            "tokens": 20_000_000}  # fmt: skip
    pool = {"id": "lab", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 1, "usd_per_node_h": 10.0}
    scenario = {"name": "fp8", "jobs": [fp8, bf16], "pools": [pool], "solver": {"time_limit_s": 5}}
    campaign, plan = ftplan.campaign(scenario), ftplan.plan(scenario)
    export_plan(campaign, plan, "torchrun", tmp_path)
    envs = {r.job: (tmp_path / r.run.replace("#", "-") / "plan.env").read_text() for r in plan.runs}
    lines = [line.split("  #")[0] for line in envs["f"].splitlines() if "FTPLAN_FP8_" in line]
    assert lines == ["export FTPLAN_FP8_RECIPE=tensorwise", "export FTPLAN_FP8_ALL_GATHER=0",
                     "export FTPLAN_FP8_WEIGHT_CACHE=1"]  # fmt: skip
    assert "FTPLAN_FP8_" not in envs["b"]

"""`ftplan import` and `--from`: configs users already hold (tests/configs/) as jobs, and back out as exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import ftplan
from ftplan.catalog import load_catalog
from ftplan.cli.app import app, run
from ftplan.errors import FtplanError, JobError
from ftplan.export import export_plan
from ftplan.importers import FORMATS, import_config
from ftplan.io import read_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests/configs"
CASES = sorted(
    (fmt, p) for fmt in FORMATS for p in (CONFIGS / fmt).glob("*") if p.suffix in (".yml", ".yaml", ".json")
    and not p.name.startswith("ds_")
)  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _raw(path: Path) -> dict:
    return json.loads(path.read_text()) if path.suffix == ".json" else read_yaml(path)


@pytest.mark.parametrize(("fmt", "path"), CASES, ids=[p.name for _, p in CASES])
def test_every_config_becomes_a_job_the_memory_model_takes(catalog, fmt, path):
    extra = {"model": "llama-3.1-70b", "seq_len": 4096} if fmt == "deepspeed" else {}
    if path.name.startswith("llama3_2-3b-full"):
        extra = {"seq_len": 2048, "gpus": 8}  # its tokenizer.max_seq_len is null; a distributed recipe
    imported = import_config(fmt, path, catalog, **extra)
    est = ftplan.memory(imported.job)
    assert est.device_total_bytes > 0
    # every top-level field is read or listed as ignored: nothing is dropped silently
    raw = _raw(path)
    assert sorted(raw) == sorted(imported.read + imported.ignored)
    assert not set(imported.read) & set(imported.ignored)
    assert {c.split(".")[0].split(" ")[0] for c, _ in imported.mapped} - {"--model", "--seq-len", "--gpus",
                                                                          "(distributed"} <= set(" ".join(
        imported.read).replace("/", " ").split()) | {"adapter", "bf16", "fp16", "flash_attention", "use_peft",
                                                     "sample_packing", "zero_optimization", "bf16.enabled",
                                                     "gradient_checkpointing", "fsdp_config", "fsdp"}  # fmt: skip


EXPECTED = {
    "llama3-8b-lora.yml": {"model": "llama-3-8b", "method": "lora", "seq_len": 4096, "micro_batch": 2, "grad_accum": 4,
                           "optimizer": "adamw-8bit", "precision": "bf16-mixed", "attention_mask": "none",
                           "lora": {"rank": 32, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
                           "layout": {"recompute": "full"}},
    "llama3.1-8b-qlora-fsdp.yml": {"method": "qlora", "optimizer": "adamw-fused", "attention_mask": "padded",
                                   "layout": {"recompute": "full", "zero": 3}},
    "mistral-7b-full-zero3.yml": {"model": "mistral-7b-v0.1", "method": "full",
                                  "layout": {"recompute": "full", "zero": 3, "offload": "optimizer+params"}},
    "llama3_1-8b-lora-single-device.yaml": {
        "model": "llama-3.1-8b", "method": "lora", "precision": "bf16-pure", "optimizer": "adamw-fused",
        "loss": "chunked", "seq_len": 2048, "micro_batch": 2, "grad_accum": 8,
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0,
                 "target_modules": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}},
    "llama3_1-8b-qlora-single-device.yaml": {"method": "qlora", "optimizer": "paged-adamw-8bit", "seq_len": 4096},
    "sft_qwen2.5-7b_lora.json": {"model": "qwen2.5-7b", "method": "lora", "micro_batch": 4, "grad_accum": 4,
                                 "optimizer": "adamw-fused", "attention_mask": "none",
                                 "lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}},
    "sft_llama3.2-3b_full_zero2.json": {"model": "llama-3.2-3b", "method": "full", "layout": {"zero": 2},
                                        "attention_mask": "padded", "engine": "deepspeed"},
    "zero3_offload_8gpu.json": {"micro_batch": 2, "grad_accum": 8, "precision": "bf16-mixed", "engine": "deepspeed",
                                "layout": {"dp": 8, "zero": 3, "offload": "optimizer+params"}},
    "zero2_fp16.json": {"precision": "fp16-mixed", "layout": {"dp": 4, "zero": 2, "offload": "optimizer"},
                        "engine": "deepspeed"},
}  # fmt: skip


@pytest.mark.parametrize(("fmt", "path"), CASES, ids=[p.name for _, p in CASES])
def test_mapped_fields_are_the_configs(catalog, fmt, path):
    extra = {"model": "llama-3.1-70b", "seq_len": 4096} if fmt == "deepspeed" else {}
    if path.name.startswith("llama3_2-3b-full"):
        extra = {"seq_len": 2048, "gpus": 8}
    job = import_config(fmt, path, catalog, **extra).job
    for key, want in EXPECTED.get(path.name, {}).items():
        if isinstance(want, dict):
            assert {k: job[key].get(k) for k in want} == want, key
        else:
            assert job[key] == want, key
    if path.name.startswith("llama3_2-3b-full"):
        assert job["layout"] == {"zero": 3, "dp": 8} and job["attention_mask"] == "none"  # packed, FSDP2 over 8


@pytest.mark.parametrize(
    ("fmt", "name", "change", "message"),
    [
        ("axolotl", "llama3-8b-lora.yml", {"optimizer": "lion_8bit"}, "field 'optimizer': 'lion_8bit'"),
        ("axolotl", "llama3-8b-lora.yml", {"adapter": "ia3"}, "field 'adapter': 'ia3'"),
        ("axolotl", "llama3-8b-lora.yml", {"base_model": "acme/unknown-7b"}, "not in the catalog"),
        ("axolotl", "llama3-8b-lora.yml", {"load_in_8bit": True}, "field 'load_in_8bit'"),
        ("torchtune", "llama3_1-8b-lora-single-device.yaml", {"dtype": "fp16"}, "field 'dtype': 'fp16'"),
        ("trl", "sft_qwen2.5-7b_lora.json", {"optim": "adamw_anyprecision"}, "field 'optim'"),
        ("deepspeed", "zero2_fp16.json", {"train_batch_size": 65}, "field 'train_batch_size': 65"),
        # values of the wrong kind: never truncated, coerced or left to a traceback
        ("axolotl", "llama3-8b-lora.yml", {"sequence_len": 2048.5}, "field 'sequence_len': 2048.5"),
        ("axolotl", "llama3-8b-lora.yml", {"micro_batch_size": True}, "field 'micro_batch_size': True"),
        ("axolotl", "llama3-8b-lora.yml", {"gradient_accumulation_steps": "4x"}, "'4x' .* give a whole number"),
        ("axolotl", "llama3-8b-lora.yml", {"lora_target_linear": False, "lora_target_modules": "q_proj"}, "names"),
        ("torchtune", "llama3_1-8b-lora-single-device.yaml", {"optimizer": "adamw"}, "field 'optimizer': 'adamw'"),
        ("trl", "sft_qwen2.5-7b_lora.json", {"fsdp": "full_shard", "fsdp_config": [1]}, "field 'fsdp_config'"),
        ("deepspeed", "zero2_fp16.json", {"gradient_accumulation_steps": "auto"}, "'auto' is filled in at launch"),
        ("deepspeed", "zero2_fp16.json", {"zero_optimization": {"stage": True}}, "'zero_optimization.stage': True"),
        ("deepspeed", "zero2_fp16.json", {"fp16": True}, "field 'fp16': True .* give a mapping"),
    ],
)
def test_an_unknown_value_is_one_line_naming_file_field_and_fix(catalog, tmp_path, fmt, name, change, message):
    raw = _raw(CONFIGS / fmt / name) | change
    path = tmp_path / name
    path.write_text(json.dumps(raw) if name.endswith(".json") else yaml.safe_dump(raw))
    with pytest.raises(JobError, match=message) as exc:
        import_config(fmt, path, catalog, model="llama-3.1-8b" if fmt == "deepspeed" else None, seq_len=2048)
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and "To fix:" in text


def test_a_whole_number_written_as_a_float_is_read_as_that_number(catalog, tmp_path):
    raw = _raw(CONFIGS / "axolotl" / "llama3-8b-lora.yml") | {"sequence_len": 4096.0, "micro_batch_size": 2.0}
    path = tmp_path / "float.yml"
    path.write_text(yaml.safe_dump(raw))
    job = import_config("axolotl", path, catalog).job
    assert (job["seq_len"], job["micro_batch"]) == (4096, 2) and isinstance(job["seq_len"], int)


def test_axolotls_flex_attention_keys_set_the_kernel(catalog, tmp_path):
    """Axolotl names FlexAttention with its older boolean or with Transformers' ``attn_implementation``; an unpacked
    batch stays padded (FlexAttention takes the padding as a block mask, which the kernel says)."""
    base = _raw(CONFIGS / "axolotl" / "llama3-8b-lora.yml") | {"sample_packing": False, "flash_attention": False}
    for change, kernel, mask in (({"flex_attention": True}, "flex", "padded"),
                                 ({"attn_implementation": "flex_attention"}, "flex", "padded"),
                                 ({"attn_implementation": "flash_attention_3"}, "flash3", "none"),
                                 ({}, None, "padded")):  # fmt: skip
        path = tmp_path / "axolotl.yml"
        path.write_text(yaml.safe_dump(base | change))
        job = import_config("axolotl", path, catalog).job
        assert (job.get("attention_kernel"), job["attention_mask"], job["attention"]) == (kernel, mask, "sdpa")
    path.write_text(yaml.safe_dump(base | {"attn_implementation": "paged"}))
    with pytest.raises(JobError, match="field 'attn_implementation': 'paged'"):
        import_config("axolotl", path, catalog)


def test_a_deepspeed_json_with_a_syntax_error_is_one_line_naming_its_line(catalog, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{\n  "train_micro_batch_size_per_gpu": 2,\n}')
    with pytest.raises(FtplanError, match=r"ds\.json: not valid JSON at line 3, column 1 .*To fix"):
        import_config("deepspeed", path, catalog, model="llama-3.1-8b", seq_len=2048)


def test_cli_import_writes_a_job_and_lists_what_it_ignored(tmp_path, capsys):
    out = tmp_path / "job.yaml"
    res = runner.invoke(app, ["import", "axolotl", str(CONFIGS / "axolotl/llama3-8b-lora.yml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "ignored (not modelled): " in res.output and "learning_rate" in res.output
    job = read_yaml(out)
    assert job["model"] == "llama-3-8b"
    assert "# mapped:" in out.read_text() and "lora_target_linear → lora.target_modules" in out.read_text()
    assert runner.invoke(app, ["memory", str(out), "--gpu", "h100"]).exit_code == 0
    bad = runner.invoke(app, ["import", "megatron", str(out)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert run(["import", "deepspeed", str(CONFIGS / "deepspeed/zero2_fp16.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the config names no model. To fix: pass --model" in err


def test_memory_and_fit_read_a_config_with_from():
    cfg = str(CONFIGS / "torchtune/llama3_1-8b-lora-single-device.yaml")
    res = runner.invoke(app, ["memory", cfg, "--from", "torchtune", "--gpu", "h100", "--format", "json"])
    assert res.exit_code == 0, res.output
    direct = ftplan.memory(import_config("torchtune", Path(cfg), load_catalog()).job | {"gpu": "h100"})
    assert json.loads(res.output)["device_total_bytes"] == direct.device_total_bytes
    trl = str(CONFIGS / "trl/sft_qwen2.5-7b_lora.json")
    fit = runner.invoke(app, ["fit", trl, "--from", "trl", "--gpu", "h100", "--tokens", "10000000", "--top", "1"])
    assert fit.exit_code == 0, fit.output
    assert runner.invoke(app, ["memory", cfg, "--from", "nemo"]).exit_code == 2


TRL_CONFIGS = sorted(p.name for p in (CONFIGS / "trl").glob("sft_*.json"))


@pytest.mark.parametrize("name", TRL_CONFIGS)
def test_a_config_survives_import_plan_and_export(catalog, tmp_path, name):
    """TRL config → job → a campaign on an 8×H100 node (the recipe, recomputation and ZeRO stage fixed; the rest of
    the layout the planner's) → TRL export: every recipe field that was mapped comes back, and the batch per step
    is the config's."""
    src = CONFIGS / "trl" / name
    raw = _raw(src)
    job = import_config("trl", src, catalog, gpus=8).job
    fixed = {k: v for k, v in job.items() if k not in ("micro_batch", "grad_accum", "layout")}
    layout = job["layout"]
    global_batch = job["micro_batch"] * job["grad_accum"] * layout.get("dp", 1)
    allow = {"recompute": [layout.get("recompute", "none")], "zero": [layout.get("zero", 0)], "offload": False}
    scenario = {
        "name": "round-trip",
        "jobs": [fixed | {"id": "sft", "tokens": 50_000_000, "global_batch": global_batch, "allow": allow}],
        "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1, "usd_per_node_h": 20.0}],
    }
    plan = ftplan.plan(scenario)
    export_plan(ftplan.campaign(scenario), plan, "trl", tmp_path)
    sft = json.loads((tmp_path / "sft/sft_config.json").read_text())
    for key in ("bf16", "optim", "max_length", "packing", "gradient_checkpointing"):
        assert sft[key] == raw[key], key
    if "deepspeed" in raw:
        ds = json.loads((tmp_path / "sft" / sft["deepspeed"]).read_text())
        original = json.loads((src.parent / raw["deepspeed"]).read_text())
        assert ds["zero_optimization"]["stage"] == original["zero_optimization"]["stage"]
    if raw.get("use_peft"):
        lora = json.loads((tmp_path / "sft/lora_config.json").read_text())
        assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (raw["lora_r"], raw["lora_alpha"],
                                                                         raw["lora_dropout"])  # fmt: skip
        assert lora["target_modules"] == raw["lora_target_modules"]
    lay = plan.runs[0].layout
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * lay.dp == global_batch

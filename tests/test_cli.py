"""The CLI as a user runs it: tables, JSON, one-line errors with exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftplan.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def ftplan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftplan", *args], capture_output=True, text=True, cwd=cwd or ROOT, check=False
    )


def test_memory_from_job_file_json():
    res = runner.invoke(app, ["memory", str(ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml"), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "device_total_bytes", "host_bytes_per_node",
                "fits", "breakdown"):  # fmt: skip
        assert key in out
    assert out["fits"] is True
    assert out["peak_allocated_bytes"] < out["peak_reserved_bytes"] < out["device_total_bytes"]
    assert out["breakdown"]["weights_frozen"] == 8_030_261_248 * 2


def test_memory_flags_override_and_table():
    res = runner.invoke(
        app, ["memory", "--model", "llama-3.1-70b", "--method", "full", "--gpu", "a100-80gb", "--seq-len", "4096"]
    )
    assert res.exit_code == 0, res.output
    assert "DOES NOT FIT" in res.output and "short by" in res.output
    assert "peak allocated" in res.output


def test_inline_architecture(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "architecture: {model_type: qwen2, hidden_size: 896, num_hidden_layers: 24, num_attention_heads: 14,\n"
        "  num_key_value_heads: 2, intermediate_size: 4864, vocab_size: 151936, tie_word_embeddings: true}\n"
        "seq_len: 1024\nmethod: qlora\nprecision: bf16-mixed\ngpu: t4\n"
    )
    res = runner.invoke(app, ["memory", str(job), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["fits"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["memory", "--model", "llama-3.1-8x", "--seq-len", "512"], "Did you mean: llama-3.1-8b"),
        (["memory", "--model", "llama-3.1-8b", "--seq-len", "512", "--gpu", "h10"], "unknown GPU"),
        (["memory", "--model", "llama-2-70b", "--seq-len", "512", "--tp", "3"], "must divide"),
        (["memory", "--model", "llama-2-70b", "--seq-len", "512", "--tp", "16", "--gpu", "h100"], "larger than a node"),
        (["memory", "--model", "llama-3.1-8b", "--seq-len", "0"], "seq_len"),
        (
            ["memory", "--model", "llama-3.1-8b", "--seq-len", "512", "--method", "qlora", "--precision", "fp32"],
            "QLoRA computes in 16 bits",
        ),
        (["memory", "--model", "llama-3.1-8b", "--seq-len", "512", "--offload", "optimizer"], "needs ZeRO"),
    ],
)
def test_bad_input_is_one_line_exit_1(args, needle):
    res = ftplan(*args)
    assert res.returncode == 1
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_unknown_yaml_key_rejected(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: llama-3.1-8b\nseq_len: 512\nmicro_bach: 2\n")
    res = ftplan("memory", str(job))
    assert res.returncode == 1
    assert "micro_bach" in res.stderr and "unknown field" in res.stderr and str(job) in res.stderr


def test_malformed_yaml(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: [unclosed\n")
    res = ftplan("memory", str(job))
    assert res.returncode == 1 and "not valid YAML" in res.stderr


@pytest.mark.parametrize("what", ["gpus", "models", "instances"])
def test_catalog_listings(what):
    res = runner.invoke(app, ["catalog", what, "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) >= {"gpus": 14, "models": 25, "instances": 90}[what]


def test_catalog_filter_and_csv():
    res = runner.invoke(app, ["catalog", "instances", "--filter", "h100", "--format", "csv"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("instance,") and all("h100" in line.lower() for line in lines[1:])


def test_import_hf_then_use(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "mistral", "hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 1024, "vocab_size": 8000, "torch_dtype": "bfloat16",
        "rope_scaling": {"type": "linear"},
    }))  # fmt: skip
    res = ftplan("catalog", "import-hf", str(cfg), "--id", "my-mistral", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ftplan.models.yaml").exists()
    res = ftplan("memory", "--model", "my-mistral", "--seq-len", "256", "--format", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["model"] == "my-mistral"


def test_output_file_written(tmp_path):
    out = tmp_path / "m.json"
    res = runner.invoke(
        app, ["memory", "--model", "qwen2.5-0.5b", "--seq-len", "512", "--format", "json", "-o", str(out)]
    )
    assert res.exit_code == 0
    assert json.loads(out.read_text())["model"] == "qwen2.5-0.5b"


def test_import_hf_keeps_nested_rope_parameters(tmp_path):
    from ftplan.catalog import import_hf_config, load_catalog

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "model_type": "phi", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
        "intermediate_size": 8192, "vocab_size": 51200,
        "rope_parameters": {"rope_theta": 10000.0, "partial_rotary_factor": 0.25, "rope_type": "default"},
        "quantization_config": {"bits": 4, "nested": {"deep": 1}},  # not scalar-valued: left out
    }))  # fmt: skip
    out = tmp_path / "models.yaml"
    entry = import_hf_config(cfg, "phi-quarter", out)
    assert entry.config["rope_parameters"]["partial_rotary_factor"] == 0.25
    assert "quantization_config" not in entry.config
    assert load_catalog(user_models=out).architecture("phi-quarter").rotary_dim == 64 // 4


def test_a_lora_rank_above_a_layers_width_is_accepted_as_peft_does():
    """qwen2.5-0.5b, rank 2048 on q/k/v/o (896→896, 896→128, 896→128, 896→896) × 24 layers, fp32 adapters."""
    res = runner.invoke(app, ["memory", "--model", "qwen2.5-0.5b", "--method", "lora", "--lora-rank", "2048",
                              "--seq-len", "128", "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["breakdown"]["weights_trainable"] == 2048 * 24 * (1792 + 1024 + 1024 + 1792) * 4


@pytest.mark.parametrize("path", sorted((Path(__file__).parent / "hf_configs").glob("*.json")), ids=lambda p: p.stem)
def test_import_hf_reads_each_family_as_published(tmp_path, path, catalog):
    """A config.json of each 2025-26 family, as its hub repository publishes it (tests/hf_configs, written
    from the public files): imported, it counts the parameters of the catalog entry of the same model,
    which matches the model card's figure (tests/test_arch.py), and keeps list fields such as layer_types."""
    from ftplan.catalog import import_hf_config, load_catalog

    out = tmp_path / "models.yaml"
    entry = import_hf_config(path, path.stem + "-imported", out)
    imported = load_catalog(user_models=out).architecture(entry.id)
    assert imported == catalog.architecture(path.stem)
    assert imported.total_params == catalog.architecture(path.stem).total_params
    data = json.loads(path.read_text())
    assert all(entry.config[k] == v for k, v in data.items() if isinstance(v, list))


def test_catalog_models_shows_expert_counts_as_whole_numbers():
    res = runner.invoke(app, ["catalog", "models", "--filter", "mixtral-8x7b", "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[1].endswith(",8")  # not 8.0 beside the dense models' blanks
    res = runner.invoke(app, ["catalog", "models", "--filter", "qwen3-8b", "--format", "json"])
    assert json.loads(res.output)[0]["experts"] is None


def test_memory_flags_lay_out_pipelines_hsdp_and_context_parallelism():
    base = ["memory", "--model", "llama-3.1-70b", "--method", "full", "--gpu", "h100", "--seq-len", "4096"]
    piped = runner.invoke(app, [*base, "--pp", "8", "--tp", "8", "--grad-accum", "16", "--recompute", "full"])
    assert piped.exit_code == 0, piped.output
    assert "pp 8 1f1b" in piped.output and "pipeline receive buffers" in piped.output
    assert "note: pipeline rank" in piped.output
    hybrid = runner.invoke(app, [*base, "--dp", "32", "--zero", "3", "--dp-shard", "8", "--format", "json"])
    flat = runner.invoke(app, [*base, "--dp", "8", "--zero", "3", "--format", "json"])
    h, f = json.loads(hybrid.output)["breakdown"], json.loads(flat.output)["breakdown"]
    assert h["weights_trainable"] == f["weights_trainable"] and h["optimizer_states"] == f["optimizer_states"]
    split = runner.invoke(app, [*base[:-1], "131072", "--method", "lora", "--cp", "8", "--recompute", "full"])
    assert split.exit_code == 0, split.output
    assert "cp 8" in split.output.splitlines()[0]
    bad = ftplan(*base, "--pp", "2", "--virtual-stages", "2")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "interleaved-1f1b" in bad.stderr


def test_memory_flags_split_the_experts_at_a_capacity_factor():
    base = ["memory", "--model", "qwen3-30b-a3b", "--method", "full", "--gpu", "h100", "--seq-len", "4096", "--dp", "8",
            "--zero", "3"]  # fmt: skip
    whole = json.loads(runner.invoke(app, [*base, "--format", "json"]).output)["breakdown"]
    split = runner.invoke(app, [*base, "--ep", "8", "--capacity-factor", "2"])
    assert split.exit_code == 0, split.output
    assert "ep 8 (capacity factor 2)" in split.output.splitlines()[0]
    assert "expert parallelism: 16 of 128 routed experts a GPU" in split.output
    data = json.loads(runner.invoke(app, [*base, "--ep", "8", "--format", "json"]).output)["breakdown"]
    assert data["zero3_gathered_params"] < whole["zero3_gathered_params"]
    bad = ftplan(*base, "--ep", "3")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "128 routed experts" in bad.stderr


def test_fit_json_names_each_layouts_parallelisms():
    res = runner.invoke(app, ["fit", str(ROOT / "scenarios/jobs/llama-70b-128k-lora-fit.yaml"), "--instance",
                              "aws/p5en.48xlarge", "--nodes", "4", "--top", "50", "--format", "json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    rows = rows["layouts"] if isinstance(rows, dict) else rows
    assert {"pp", "cp", "dp_shard"} <= set(rows[0])
    assert any(r["cp"] > 1 for r in rows)
    assert all(r["dp"] * r["tp"] * r["pp"] * r["cp"] == r["gpus"] for r in rows)

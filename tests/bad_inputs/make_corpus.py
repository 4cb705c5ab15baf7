"""Write the corpus of bad job, scenario and plan files and its manifest (cases.yaml).

Run from the repository root: ``python tests/bad_inputs/make_corpus.py``. Each case is a file, the
command that reads it, the exit code and a phrase the one-line message must contain. Plan cases
are edits of a real plan of ``base_scenario.yaml``; regenerate them when the models change.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
JOB = {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "gpu": "h100"}
SCENARIO = {
    "name": "base",
    "jobs": [
        {"id": "a", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "tokens": 20_000_000,
         "global_batch": 8},
        {"id": "b", "model": "qwen2.5-0.5b", "method": "full", "seq_len": 1024, "tokens": 20_000_000, "global_batch": 8,
         "depends_on": ["a"], "deadline_h": 20},
        {"id": "c", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "tokens": 5_000_000, "global_batch": 8,
         "count": 2},
    ],
    "pools": [
        {"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1, "usd_per_node_h": 8.0},
        {"id": "rp", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 1},
        {"id": "buy", "kind": "purchase", "gpu": "a100-sxm-80gb", "max_nodes": 1},
    ],
    "objective": {"minimise": "cost", "then": "time", "deadline_h": 30, "budget_usd": 500},
}  # fmt: skip

cases: list[dict] = []


def case(name: str, text: str | bytes, command: list[str], code: int, phrase: str) -> None:
    path = HERE / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cases.append({"file": name, "command": command, "exit": code, "phrase": phrase})


def job_case(name: str, phrase: str, code: int = 1, **changes) -> None:
    data = {**JOB, **changes}
    data = {k: v for k, v in data.items() if v is not DROP}
    case(f"job_{name}.yaml", yaml.safe_dump(data, sort_keys=False), ["memory", "{file}"], code, phrase)


def scenario_case(name: str, phrase: str, mutate, code: int = 1) -> None:
    data = copy.deepcopy(SCENARIO)
    mutate(data)
    case(f"scenario_{name}.yaml", yaml.safe_dump(data, sort_keys=False), ["plan", "{file}", "-q"], code, phrase)


DROP = object()


def jobs_set(i: int, **kv):
    def f(d):
        for k, v in kv.items():
            if v is DROP:
                d["jobs"][i].pop(k, None)
            else:
                d["jobs"][i][k] = v

    return f


def pools_set(i: int, **kv):
    def f(d):
        d["pools"][i].update(kv)

    return f


def objective_set(**kv):
    def f(d):
        d["objective"].update(kv)

    return f


def main() -> None:
    for old in HERE.glob("*.yaml"):
        old.unlink()
    for old in HERE.glob("*.json"):
        old.unlink()
    # ---- job files: types, signs, zeros, huge values, unknown names, encodings, structure ----
    for field, bad, phrase in [
        ("seq_len", "long", "expected a number"), ("seq_len", 0, "greater than 0"), ("seq_len", -5, "greater than 0"),
        ("seq_len", 10**9, "less than or equal"), ("seq_len", True, "boolean"), ("seq_len", 1.5, "fractional"),
        ("micro_batch", 0, "greater than 0"), ("micro_batch", "2", "expected a number"), ("grad_accum", -1, "greater"),
        ("grad_accum", False, "boolean"), ("tokens", -1, "greater than 0"), ("tokens", 10**18, "less than or equal"),
        ("epochs", 0, "greater than 0"), ("epochs", "one", "expected a number"), ("epochs", 10**6, "less than"),
        ("method", "dora", "method"), ("precision", "fp64", "precision"), ("optimizer", "adam9", "optimizer"),
        ("attention", "flash9", "attention"), ("loss", "weird", "loss"), ("gpu", "h1000", "unknown GPU"),
        ("model", "llama-9", "unknown model"), ("gpus_per_node", 0, "greater than 0"), ("gpus_per_node", 512, "less"),
        ("global_batch", 0, "greater than 0"), ("samples", 0, "greater than 0"), ("dropout", "yes", "boolean"),
        ("schema_version", 2, "schema_version 2"), ("bogus_field", 1, "unknown field"),
    ]:  # fmt: skip
        job_case(f"{field}_{str(bad).replace('-', 'neg')[:12]}", phrase, **{field: bad})
    job_case("lora_rank_zero", "greater than 0", lora={"rank": 0})
    job_case("lora_rank_bool", "boolean", lora={"rank": True})
    job_case("lora_dropout_one", "less than 1", lora={"dropout": 1.0})
    job_case("lora_unknown", "unknown field", lora={"rnak": 8})
    job_case("lora_double_quant_int", "boolean", lora={"double_quant": 1})
    job_case("data_p95_below_mean", "p95_tokens (100) is below mean_tokens (500)",
             data={"mean_tokens": 500, "p95_tokens": 100})  # fmt: skip
    job_case("data_longer_than_seq_len", "exceed seq_len 1,024", data={"mean_tokens": 2000})
    job_case("data_packing_yes", "boolean", data={"mean_tokens": 500, "packing": "yes"})
    job_case("data_lengths_and_mean", "either lengths (a histogram) or mean_tokens",
             data={"mean_tokens": 500, "lengths": {256: 1, 1024: 1}})  # fmt: skip
    job_case("data_lengths_negative_share", "length 256 has share -1", data={"lengths": {256: -1, 512: 2}})
    job_case("data_no_mean", "mean_tokens", data={"p95_tokens": 500})
    axolotl = "base_model: meta-llama/Llama-3.1-8B\nadapter: lora\nsequence_len: 2048\nmicro_batch_size: 2\n"
    case("config_axolotl_optimizer.yml", axolotl + "optimizer: lion_8bit\n", ["import", "axolotl", "{file}"], 1,
         "field 'optimizer': 'lion_8bit'")  # fmt: skip
    case("config_axolotl_model.yml", axolotl.replace("meta-llama/Llama-3.1-8B", "acme/none-7b"),
         ["memory", "{file}", "--from", "axolotl"], 1, "not in the catalog")  # fmt: skip
    case("config_trl_from_unknown.json", '{"max_length": 10}', ["memory", "{file}", "--from", "megatron"], 2,
         "use one of")  # fmt: skip
    case("config_deepspeed_no_model.json", '{"train_micro_batch_size_per_gpu": 2}', ["import", "deepspeed", "{file}"],
         1, "pass --model")  # fmt: skip
    # configs whose fields are of the wrong kind: one line naming the field, never a traceback or a silent truncation
    ds_model = ["import", "deepspeed", "{file}", "--model", "llama-3.1-8b", "--seq-len", "2048"]
    for name, text, phrase in (
        (
            "deepspeed_auto.json",
            '{"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": "auto"}',
            "'auto' is filled in at launch",
        ),
        (
            "deepspeed_no_micro_batch.json",
            '{"gradient_accumulation_steps": 4}',
            "field 'train_micro_batch_size_per_gpu' is missing",
        ),
        ("deepspeed_truncated.json", '{"train_micro_batch_size_per_gpu": 2,', "not valid JSON at line 1, column 38"),
        (
            "deepspeed_zero_int.json",
            '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": 3}',
            "field 'zero_optimization': 3",
        ),
        (
            "deepspeed_stage_bool.json",
            '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": true}}',
            "field 'zero_optimization.stage': True",
        ),
        (
            "deepspeed_offload_str.json",
            '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2, "offload_optimizer": "cpu"}}',
            "field 'zero_optimization.offload_optimizer': 'cpu'",
        ),
    ):
        case(f"config_{name}", text, ds_model, 1, phrase)
    for name, text, phrase in (
        ("axolotl_seq_fraction.yml", axolotl.replace("2048", "2048.5"), "field 'sequence_len': 2048.5"),
        (
            "axolotl_micro_batch_bool.yml",
            axolotl.replace("micro_batch_size: 2", "micro_batch_size: true"),
            "field 'micro_batch_size': True",
        ),
        ("axolotl_fsdp_config_str.yml", axolotl + "fsdp: [full_shard]\nfsdp_config: full\n", "field 'fsdp_config'"),
        ("axolotl_targets_int.yml", axolotl + "lora_target_modules: 5\n", "field 'lora_target_modules': 5"),
    ):
        case(f"config_{name}", text, ["import", "axolotl", "{file}"], 1, phrase)
    tune = "model:\n  _component_: torchtune.models.llama3_1.lora_llama3_1_8b\ntokenizer: llama3\n"
    case("config_torchtune_tokenizer_str.yaml", tune, ["import", "torchtune", "{file}"], 1, "field 'tokenizer'")
    case("config_trl_seq_word.yml", "model_name_or_path: Qwen/Qwen2.5-7B\nmax_seq_length: long\n",
         ["import", "trl", "{file}"], 1, "field 'max_seq_length': 'long'")  # fmt: skip
    job_case("memory_confidence_one", "less than 1", memory_confidence=1.0)
    job_case("memory_margin_large", "not a fraction of the card", memory_margin=1.5)
    job_case("memory_margin_unit", "neither a fraction of the card nor an amount", memory_margin="6 GB per GPU")
    job_case("memory_policy_both", "keep one of them", memory_confidence=0.9, memory_margin=0.1)
    job_case("layout_tp_zero", "greater than 0", layout={"tp": 0})
    job_case("layout_zero_5", "less than or equal to 3", layout={"zero": 5})
    job_case("layout_zero_name", "unknown sharding", layout={"zero": "shard_everything"})
    job_case("layout_offload_bad", "offload", layout={"offload": "disk"})
    job_case("layout_recompute_bad", "recompute", layout={"recompute": "some"})
    job_case("layout_dp_bool", "boolean", layout={"dp": True})
    job_case("overheads_negative", "greater than or equal to 0", overheads={"allocator_fraction": -0.1})
    job_case("no_model", "exactly one of 'model'", model=DROP)
    job_case("model_and_architecture", "exactly one", architecture={"model_type": "llama"})
    job_case("tokens_samples_disagree", "disagree", tokens=1000, samples=3)
    job_case("nan_seq_len", "finite", seq_len=float("nan"))
    job_case("sequence_parallel_unknown", "'torch' or 'megatron'", sequence_parallel="deepspeed")
    job_case("context_parallel_unknown", "'ring' or 'ulysses'", context_parallel="all-gather")
    job_case("attention_kernel_unknown", "'flash2', 'cudnn', 'flash3' or 'flex'", attention_kernel="flash4")
    job_case("attention_kernel_eager", "use attention: sdpa", attention="eager", attention_kernel="cudnn")
    job_case("expert_dispatch_unknown", "'alltoall' or 'deepep'", expert_dispatch="nvshmem")
    job_case("pipeline_split_unknown", "'even' or 'weighted'", pipeline_split="by-cost")
    job_case("pipeline_split_empty_chunk", "the first and last chunk each take one layer fewer",
             pipeline_split="weighted", method="full", layout={"pp": 16, "pp_schedule": "interleaved-1f1b",
                                                                "virtual_stages": 2})  # fmt: skip
    job_case("fp8_weight_cache_not_fp8", "an fp8 block needs precision: fp8", fp8={"weight_cache": True})
    job_case("tp_overlap_eager", "set kernels: fused or drop tp_overlap", tp_overlap=True)
    job_case("tp_overlap_not_bool", "tp_overlap", tp_overlap="sometimes")
    job_case("param_gather_overlap_deepspeed", "drop param_gather_overlap or set engine: torch", engine="deepspeed",
             method="full", param_gather_overlap=True, layout={"dp": 4, "zero": 1})  # fmt: skip
    job_case("engine_unknown", "'torch' or 'deepspeed'", engine="megatron")
    job_case("engine_deepspeed_with_tp", "or engine torch", engine="deepspeed", method="full",
             layout={"dp": 4, "tp": 2, "zero": 3})  # fmt: skip
    job_case("ulysses_cp_not_dividing_heads", "use cp in", context_parallel="ulysses", seq_len=1023, layout={"cp": 3})
    case("job_duplicate_key.yaml", "model: qwen2.5-0.5b\nseq_len: 1024\nseq_len: 2048\n", ["memory", "{file}"], 1,
         "given twice")  # fmt: skip
    case("job_not_utf8.yaml", "model: qwen2.5-0.5b\nseq_len: 1024\n# caf\xe9\n".encode("latin-1"), ["memory", "{file}"],
         1, "not UTF-8")  # fmt: skip
    case("job_bad_yaml.yaml", "model: [qwen\nseq_len: 1024\n", ["memory", "{file}"], 1, "not valid YAML")
    case("job_list.yaml", "- model: qwen2.5-0.5b\n", ["memory", "{file}"], 1, "expected a mapping")
    case("job_empty.yaml", "", ["memory", "{file}"], 1, "expected a mapping")
    case("job_scalar.yaml", "42\n", ["memory", "{file}"], 1, "expected a mapping")
    case("job_tab_indent.yaml", "model: qwen2.5-0.5b\nlora:\n\trank: 8\n", ["memory", "{file}"], 1, "not valid YAML")
    case("job_fit_no_tokens.yaml", yaml.safe_dump({**JOB, "global_batch": 8}), ["fit", "{file}"], 1, "no tokens")
    # ---- scenario files ----
    scenario_case("count_bool", "boolean", jobs_set(0, count=True))
    scenario_case("memory_confidence_text", "expected a number", lambda d: d.update(memory_confidence="high"))
    scenario_case("memory_margin_negative", "not a fraction of the card", lambda d: d.update(memory_margin=-0.1))
    scenario_case("count_zero", "greater than or equal to 1", jobs_set(0, count=0))
    scenario_case("count_huge", "less than or equal", jobs_set(0, count=10**6))
    scenario_case("count_text", "expected a number", jobs_set(0, count="2"))
    scenario_case("id_hash", "'#'", jobs_set(0, id="c#1"))
    scenario_case("id_slash", "'/'", jobs_set(0, id="a/b"))
    scenario_case("id_space", "spaces", jobs_set(0, id="a b"))
    scenario_case("id_empty", "at least 1 character", jobs_set(0, id=""))
    scenario_case("id_duplicate", "appears twice", jobs_set(1, id="a", depends_on=[]))
    scenario_case("no_tokens", "tokens or samples is required", jobs_set(0, tokens=DROP))
    scenario_case("no_global_batch", "global_batch is required", jobs_set(0, global_batch=DROP))
    scenario_case("layout_given", "the planner chooses these", jobs_set(0, layout={"dp": 1}))
    scenario_case("gpu_given", "the planner chooses these", jobs_set(0, gpu="h100"))
    scenario_case("deadline_negative", "greater than 0", jobs_set(1, deadline_h=-1))
    scenario_case("deadline_huge", "less than or equal", jobs_set(1, deadline_h=1e9))
    scenario_case("depends_unknown", "unknown job 'x'", jobs_set(1, depends_on=["x"]))
    scenario_case("depends_self", "depends on itself", jobs_set(1, depends_on=["b"]))
    scenario_case("depends_cycle", "cycle", lambda d: d["jobs"][0].update(depends_on=["b"]))
    scenario_case("priority_text", "expected a number", jobs_set(0, priority="high"))
    scenario_case("allow_zero_text", "expected a number", jobs_set(0, allow={"zero": ["all"]}))
    scenario_case("allow_optimizer", "optimizer", jobs_set(0, allow={"optimizers": ["adam9"]}))
    scenario_case("allow_max_gpus_zero", "greater than 0", jobs_set(0, allow={"max_gpus": 0}))
    scenario_case("allow_offload_int", "boolean", jobs_set(0, allow={"offload": 0}))
    scenario_case("allow_unknown", "unknown field", jobs_set(0, allow={"zeros": [1]}))
    scenario_case("job_model_unknown", "unknown model", jobs_set(0, model="qwen9"))
    scenario_case("tokens_and_samples", "disagree", jobs_set(0, samples=7))
    scenario_case("pool_kind", "does not match any of the expected tags", pools_set(0, kind="rented"))
    scenario_case("pool_no_kind", "Unable to extract tag", lambda d: d["pools"][0].pop("kind"))
    scenario_case("owned_nodes_zero", "greater than 0", pools_set(0, nodes=0))
    scenario_case("owned_nodes_huge", "less than or equal to 100000", pools_set(0, nodes=10**9))
    scenario_case("owned_nodes_float", "fractional", pools_set(0, nodes=1.5))
    scenario_case("owned_gpu_unknown", "unknown GPU", pools_set(0, gpu="h1000"))
    scenario_case("owned_price_negative", "greater than or equal to 0", pools_set(0, usd_per_node_h=-1))
    scenario_case("owned_price_huge", "less than or equal", pools_set(0, usd_per_node_h=1e20))
    scenario_case("owned_network_zero", "greater than 0", pools_set(0, network_gbps=0))
    scenario_case("owned_efficiency", "less than or equal to 1", pools_set(0, efficiency=1.5))
    scenario_case("owned_gpus_per_node", "less than or equal to 64", pools_set(0, gpus_per_node=1000))
    scenario_case("cloud_quota_zero", "quota_nodes", pools_set(1, quota_nodes=0))
    scenario_case("cloud_quota_bool", "boolean", pools_set(1, quota_nodes=True))
    scenario_case("cloud_instance_unknown", "pools[1] (rp).instance: unknown instance", pools_set(1, instance="aws/p9"))
    scenario_case("cloud_pricing", "pricing", pools_set(1, pricing="reserved"))
    scenario_case("cloud_unknown_field", "field 'pools[1].nodes': unknown field", pools_set(1, nodes=2))
    scenario_case("purchase_max_zero", "greater than 0", pools_set(2, max_nodes=0))
    scenario_case("purchase_resale_one", "less than 1", pools_set(2, resale_fraction=1))
    scenario_case("purchase_price_huge", "less than or equal", pools_set(2, usd_per_node=1e20))
    scenario_case("purchase_amortisation", "greater than 0", pools_set(2, amortisation_h=0))
    scenario_case("pool_id_slash", "'/'", pools_set(0, id="lab/x"))
    scenario_case("pool_id_duplicate", "appears twice", pools_set(1, id="lab"))
    scenario_case("objective_minimise", "minimise", objective_set(minimise="money"))
    scenario_case("objective_then", "then", objective_set(then="quality"))
    scenario_case("objective_budget_zero", "greater than 0", objective_set(budget_usd=0))
    scenario_case("objective_deadline_text", "expected a number", objective_set(deadline_h="soon"))
    scenario_case("solver_workers_zero", "greater than or equal to 1", lambda d: d.update(solver={"workers": 0}))
    scenario_case("solver_time_zero", "greater than 0", lambda d: d.update(solver={"time_limit_s": 0}))
    scenario_case("solver_gap_one", "less than 1", lambda d: d.update(solver={"relative_gap": 1}))
    scenario_case("solver_seed_negative", "greater than or equal to 0", lambda d: d.update(solver={"seed": -1}))
    scenario_case("schema_version", "schema_version", lambda d: d.update(schema_version=3))
    scenario_case("no_jobs", "jobs", lambda d: d.update(jobs=[]))
    scenario_case("no_pools", "pools", lambda d: d.update(pools=[]))
    scenario_case("unknown_top", "unknown field", lambda d: d.update(job=[]))
    scenario_case("deadline_too_short", "beyond the campaign deadline", objective_set(deadline_h=0.01))
    scenario_case("budget_too_small", "no plan meets", objective_set(budget_usd=0.05))
    scenario_case("fits_nowhere", "fits on no pool", jobs_set(0, model="llama-3.1-405b", method="full"))
    scenario_case(
        "centuries", "ftplan plans at most 1,000,000 h",
        lambda d: (jobs_set(0, tokens=10**15)(d), d["jobs"][1].pop("deadline_h"), d.update(objective={})),
    )  # fmt: skip
    scenario_case(
        "too_many_runs", "runs (jobs × count)", lambda d: d["jobs"].extend([{**d["jobs"][2], "id": "z", "count": 2000}])
    )
    case("scenario_duplicate_key.yaml", yaml.safe_dump(SCENARIO, sort_keys=False) + "name: again\n",
         ["plan", "{file}", "-q"], 1, "key 'name' is given twice")  # fmt: skip
    case("scenario_not_utf8.yaml", b"name: \xff\xfe\n", ["plan", "{file}", "-q"], 1, "not UTF-8")
    case("scenario_check_missing_plan.yaml", yaml.safe_dump(SCENARIO, sort_keys=False),
         ["check", "{file}", "no-such-plan.yaml"], 1, "file not found")  # fmt: skip
    # ---- plans: a real plan of base_scenario.yaml, edited one way each ----
    base = HERE / "base_scenario.yaml"
    base.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "ftplan", "plan", str(base), "-q", "--format", "json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    plan = json.loads(out.stdout)
    (HERE / "plan_valid.json").write_text(json.dumps(plan, indent=2))
    runs = {r["run"]: i for i, r in enumerate(plan["runs"])}

    def plan_case(name: str, phrase: str, edit) -> None:
        p = copy.deepcopy(plan)
        edit(p)
        case(f"plan_{name}.json", json.dumps(p, indent=2), ["check", "base_scenario.yaml", "{file}"], 1, phrase)

    def run_of(rid):
        return lambda p: p["runs"][runs[rid]]

    def layout(rid, **kv):
        return lambda p: run_of(rid)(p)["layout"].update(kv)

    plan_case("precision", "precision fp32 stated", layout("a", precision="fp32"))
    plan_case("optimizer", "not allowed", layout("a", optimizer="sgd"))
    plan_case("scenario_name", "the plan is for 'other'", lambda p: p.update(scenario="other"))
    plan_case("status_forged", "OPTIMAL with a gap", lambda p: p["solver"].update(bound=0.0, gap=1.0))
    plan_case("objective_value", "is not the plan's cost", lambda p: p["solver"].update(objective_value=1.0))
    plan_case("gap_forged", "gap", lambda p: p["solver"].update(gap=0.5))
    plan_case("bound_above", "is above its value", lambda p: p["solver"].update(bound=1e9))
    plan_case("then_forged", "second objective", lambda p: p["solver"].update(then_value=0.001))
    plan_case("deadline", "after its deadline", lambda p: _shift(run_of("b")(p), 25.0))
    plan_case("dependency", "before a ends", lambda p: _shift(run_of("b")(p), -run_of("b")(p)["start_h"]))
    tight = copy.deepcopy(SCENARIO)
    tight["objective"]["budget_usd"] = 0.01
    (HERE / "base_scenario_budget.yaml").write_text(yaml.safe_dump(tight, sort_keys=False))
    case("plan_budget.json", json.dumps(plan, indent=2), ["check", "base_scenario_budget.yaml", "{file}"], 1,
         "over the budget")  # fmt: skip
    plan_case("memory", "memory", lambda p: run_of("a")(p).update(memory_per_gpu_bytes=1))
    plan_case("headroom", "headroom", lambda p: run_of("a")(p).update(headroom_bytes=1))
    plan_case("hours", "h stated", lambda p: run_of("a")(p).update(hours=0.001))
    plan_case("tokens_per_s", "tokens/s stated", lambda p: run_of("a")(p).update(tokens_per_s=1.0))
    plan_case("usd", "recomputed", lambda p: run_of("a")(p).update(usd=0.0))
    plan_case("unknown_run", "not in the scenario", lambda p: run_of("a")(p).update(run="zz"))
    plan_case("missing_run", "is not placed", lambda p: p["runs"].pop(runs["a"]))
    plan_case("unknown_pool", "unknown pool", lambda p: run_of("a")(p).update(pool="nowhere"))
    plan_case("job_field", "belongs to", lambda p: run_of("a")(p).update(job="b"))
    plan_case("batch", "global batch", layout("a", micro_batch=64))
    plan_case(
        "gpu_index", "distinct GPUs", lambda p: run_of("a")(p).update(gpus={n: [99] for n in run_of("a")(p)["gpus"]})
    )
    plan_case("makespan", "makespan", lambda p: p["totals"].update(makespan_h=0.1))
    plan_case("total_cost", "cost $", lambda p: p["totals"].update(cost_usd=1.0))
    plan_case("gpu_hours", "GPU-hours stated", lambda p: p["totals"].update(gpu_hours=1.0))
    plan_case("pool_use", "utilisation", lambda p: p["totals"]["pools"][0].update(utilisation=0.99))
    plan_case("pool_missing", "pools", lambda p: p["totals"]["pools"].pop())
    plan_case("bought_cloud", "sells none", lambda p: p["totals"]["pools"][1].update(nodes_bought=1))
    plan_case("extra_field", "unknown field", lambda p: p.update(extra=1))
    plan_case("status_value", "status", lambda p: p["solver"].update(status="GREAT"))
    plan_case("gpu_count_bool", "boolean", lambda p: run_of("a")(p).update(gpu_count=True))
    case("plan_not_a_mapping.json", "[1, 2]", ["check", "base_scenario.yaml", "{file}"], 1, "expected a mapping")
    plan_case("done_outside_replan", "outside a re-plan", lambda p: run_of("a")(p).update(state="done"))

    # ---- status files for `ftplan replan` of that plan ----
    def status_case(name: str, phrase: str, data: object) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        case(f"status_{name}.yaml", text, ["replan", "base_scenario.yaml", "plan_valid.json", "--status", "{file}",
                                           "-q"], 1, phrase)  # fmt: skip

    status_case("negative_now", "now_h", {"now_h": -1})
    status_case("unknown_run", "not a run of plan_valid.json", {"now_h": 0.1, "runs": {"zz": {"state": "finished"}}})
    status_case("bad_state", "state", {"now_h": 0.1, "runs": {"a": {"state": "paused"}}})
    status_case("cloud_node_lost", "cloud instance", {"now_h": 0.1, "nodes_lost": ["rp/i0"]})
    status_case("unknown_node", "not a node", {"now_h": 0.1, "nodes_lost": ["lab/node9"]})
    status_case("two_progresses", "keep one of them",
                {"now_h": 0.1, "runs": {"a": {"state": "running", "progress": 0.5, "tokens_done": 10}}})  # fmt: skip
    status_case("unknown_field", "unknown field", {"now_h": 0.1, "nodes": []})
    status_case("all_finished", "nothing is left to plan", {"now_h": 1000})
    status_case("not_started", "mark it pending", {"now_h": 0.0, "runs": {"b": {"state": "running"}}})
    status_case("progress_bool", "boolean", {"now_h": 0.1, "runs": {"a": {"state": "running", "progress": True}}})
    (HERE / "cases.yaml").write_text(
        "# generated by make_corpus.py: file, command ({file} is the file), exit code, phrase of the message\n"
        + yaml.safe_dump(cases, sort_keys=False, allow_unicode=True)
    )
    print(f"{len(cases)} cases")


def _shift(run: dict, hours: float) -> None:
    run["start_h"] += hours
    run["end_h"] += hours


if __name__ == "__main__":
    main()

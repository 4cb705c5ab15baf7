"""Time model vs published throughput, beside a plain FLOPs ÷ (peak × efficiency) baseline.

Cases: ``throughput_public.yaml`` (pre-training and a few fine-tuning runs) and
``throughput_finetune_public.yaml`` (LoRA, QLoRA and full fine-tuning: Qwen's README, NeMo Automodel,
LitGPT, universal-llm-trainer; copied from the team's validation data with its provenance). Each case
runs with its own layout (dp, tp, pipeline stages and their interleaving, ZeRO stage, recomputation,
micro-batch, accumulation, LoRA rank and targets) and is compared on tokens/s per GPU.

Model dimensions come from the case, else from the catalog by the model's name (``MODEL_NAMES`` maps
the sources' spellings to catalog ids). Out of scope, each counted by its reason: GPUs and models the
catalog does not hold, context parallelism, offload, variable-length batches (a job states no length
distribution yet), FP8 outside full training, MoE and models above 75B.

Baseline: the llm-analysis formula — the job's weight-matmul FLOPs (6N full, 4N + adapters with frozen
weights), attention counted without causal halving (``12·L·s·d_q`` a token), a full recomputation's extra
forward where the case recomputes — at the GPU's peak × the catalog efficiency, with no communication.

Fitted vs held out: the catalog's GPU efficiencies are medians of llm-foundry's tables, so the foundry
cases are the part the constants were fitted on and every other source is held out; the summary prints
both parts separately.

Usage: python benchmarks/throughput_accuracy.py [--cases] [--fit]
"""

from __future__ import annotations

import math
import re
import statistics
import sys
from pathlib import Path

import numpy as np

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.bands import NODE_BUCKETS, SEQ_BUCKETS, bucket
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.fit import Pool, hardware
from ftplan.io import read_yaml
from ftplan.memory.setup import Fp8Setup, LoraSetup, Method, Precision, Training
from ftplan.report.tables import render_table
from ftplan.timing import model as tm

HERE = Path(__file__).parent
FILES = (HERE / "throughput_public.yaml", HERE / "throughput_finetune_public.yaml")
FITTED_SOURCES = {"foundry"}  # the catalog's GPU efficiencies are medians of llm-foundry's tables

# Network per 8-GPU node where a case does not state it: DGX/HGX H100 8×400 Gbps NDR, DGX A100
# 8×200 Gbps HDR (shared/data/gpus.yaml inter_node_typical).
NETWORK = {"h100-sxm-80gb": 3200.0, "h200-sxm-141gb": 3200.0, "a100-sxm-80gb": 1600.0, "a100-sxm-40gb": 1600.0}

# Bus bandwidth the source measured on its own cluster, which a pool states (``allreduce_busbw_gbs``):
# the Ultra-Scale Playbook's 8×H100 nodes, all-reduce of 256 MB by node count (its ``pp_comm_bandwidth``
# data; time_model_notes §2.1).
MEASURED_BUSBW = {"usp": {1: None, 2: 362.0, 4: 160.0, 8: 99.6, 16: 84.7, 32: 64.9, 64: 32.9}}

# The sources' model names → catalog ids (an HF checkpoint name first where the case gives one).
# Llama 3.3 70B has Llama 3.1 70B's architecture (meta-llama model cards).
MODEL_NAMES = {
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/llama-3.3-70b-instruct": "llama-3.1-70b",
    "qwen/qwen2.5-7b": "qwen2.5-7b",
    "qwen/qwen2.5-32b-instruct": "qwen2.5-32b",
    "llama 3.1 8b": "llama-3.1-8b",
    "llama 3.1 70b": "llama-3.1-70b",
    "llama 2 7b": "llama-2-7b",
    "llama 2 13b": "llama-2-13b",
    "llama-2 7b": "llama-2-7b",
    "llama2-13b": "llama-2-13b",
    "llama2-70b": "llama-2-70b",
    "phi3-mini (3.8b)": "phi-3-mini-4k",
}

# Models the catalog lacks, as the llama-shaped configuration they equal (time-model FLOPs only):
# Qwen-7B (Qwen1) has 32 layers, 4096 wide, 32 heads, untied embeddings (QwenLM/Qwen tech_memo.md), SwiGLU
# halves of 11008 (its config.json intermediate_size 22016 counts both) and a 151,936-entry vocabulary.
SOURCE_CONFIGS = {
    "qwen-7b (qwen1 series)": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                               "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                               "vocab_size": 151936, "tie_word_embeddings": False},
}  # fmt: skip


class OutOfScope(Exception):
    """A case the model cannot express, with the reason."""


def _gpu_id(name: str, catalog: Catalog) -> str:
    n = name.upper()
    if "HBM2E" in n and "H100" in n:  # torchtitan's Grand Teton H100s: 96 GB HBM2e capped at 500 W
        raise OutOfScope("GPU not in the catalog")
    if "H200" in n:
        return "h200-sxm-141gb"
    if "H100" in n and "PCIE" not in n:
        return "h100-sxm-80gb"
    if "A100" in n:
        return "a100-sxm-40gb" if "40" in n else "a100-sxm-80gb"
    try:
        return catalog.gpu(re.sub(r"\s*\(.*", "", name).strip()).id
    except FtplanError as exc:
        raise OutOfScope("GPU not in the catalog") from exc


def _zero(sharding: str) -> int:
    s = sharding.lower()
    if "distributed optimizer" in s or ("zero-1" in s and "zero-1/2" not in s):
        return 1
    if "zero-1/2" in s or "zero-2" in s:
        return 2
    if any(k in s for k in ("zero-3", "full_shard", "fsdp")):
        return 3
    return 0


def _recompute(text: str) -> int:
    t = text.lower()
    if t.startswith("selective"):
        return 1
    return 2 if t.startswith(("full", "on", "true", "yes")) else 0


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _architecture(case: dict, catalog: Catalog) -> Architecture:
    m = case.get("model") or {}
    needed = ("hidden", "layers", "heads", "ffn", "vocab")
    if all(m.get(k) for k in needed):
        h, ffn = int(m["hidden"]), int(m["ffn"])
        cfg = {
            "model_type": "llama" if ffn != 4 * h else "gpt_neox", "hidden_size": h,
            "num_hidden_layers": int(m["layers"]), "num_attention_heads": int(m["heads"]),
            "num_key_value_heads": int(m.get("kv_heads") or m["heads"]), "intermediate_size": ffn,
            "vocab_size": int(m["vocab"]), "tie_word_embeddings": False,
        }  # fmt: skip
        return architecture_from_hf(cfg, case["id"])
    names = [str(m.get("hf_checkpoint") or ""), str(m.get("name") or "")]
    size = str(m.get("size") or "").lower()
    names += [f"{names[1]} {size}"]
    for name in names:
        key = MODEL_NAMES.get(name.strip().lower())
        if key:
            return catalog.architecture(key)
        if name.strip().lower() in SOURCE_CONFIGS:
            return architecture_from_hf(SOURCE_CONFIGS[name.strip().lower()], case["id"])
    raise OutOfScope("model not in the catalog")


def _lora(case: dict) -> LoraSetup:
    lora = case.get("lora") or {}
    targets = lora.get("target_modules")
    names = tuple(targets) if isinstance(targets, list) else ()
    known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    return LoraSetup(
        rank=int(lora.get("rank") or 16),
        target_modules=names if names and set(names) <= known else ("all-linear",),
    )


def translate(case: dict, catalog: Catalog) -> dict:
    """The case as the time model's inputs; raises :class:`OutOfScope` with the reason."""
    hw, par = case.get("hardware") or {}, case.get("parallelism") or {}
    meas, derived = case.get("measured") or {}, case.get("derived") or {}
    gpu = _gpu_id(str(hw.get("gpu", "")), catalog)
    prec = str(case.get("precision", "")).lower()
    method = str(case.get("method", "")).split(" ")[0]
    fp8 = "fp8" in prec
    kind = {"pretrain": "pretrain", "full_ft": "full", "full": "full", "lora": "LoRA", "qlora": "QLoRA"}.get(method)
    if kind is None:
        raise OutOfScope(f"method {method!r}")
    if "4-bit" in prec or "nf4" in prec:
        kind = "QLoRA"
    if fp8 and kind not in ("pretrain", "full"):  # FP8 is modelled for full training
        raise OutOfScope("FP8 with frozen weights")
    if (par.get("cp") or 1) != 1:
        raise OutOfScope("context parallelism")
    if str(par.get("offload") or "none").strip().lower() != "none":
        raise OutOfScope("offload")
    seq = _int(case.get("seq_len")) or _int((case.get("model") or {}).get("seq_len"))
    if seq is None:
        raise OutOfScope("variable-length batches")
    measured = meas.get("tokens_per_s_per_gpu") or derived.get("tokens_per_s_per_gpu")
    if not measured or not case.get("micro_batch"):
        raise OutOfScope("no tokens/s per GPU")
    arch = _architecture(case, catalog)
    if arch.is_moe or arch.total_params > 75e9:
        raise OutOfScope("MoE or above 75B")
    count = int(hw.get("count") or 1)
    tp, pp = int(par.get("tp") or 1), int(par.get("pp") or 1)
    dp = count // (tp * pp)
    # Megatron's virtual pipeline size (vp): chunks a rank holds under the interleaved schedule
    virtual = int(par.get("vp") or 1) if pp > 1 else 1
    frozen = kind in ("LoRA", "QLoRA")
    training = Training(
        method={"LoRA": Method.LORA, "QLoRA": Method.QLORA}.get(kind, Method.FULL),
        precision=Precision.FP8 if fp8 else Precision.FP16_MIXED if "fp16" in prec else Precision.BF16_MIXED,
        seq_len=seq, lora=_lora(case) if frozen else None,
        fp8=Fp8Setup(all_gather="all-gather" in prec) if fp8 else None,
    )  # fmt: skip
    nodes = int(hw.get("nodes") or math.ceil(count / 8))
    return {
        "id": case["id"], "arch": arch, "training": training, "gpu": gpu, "dp": dp, "tp": tp, "pp": pp,
        "virtual": virtual, "zero": _zero(str(par.get("sharding") or "")),
        "recompute": _recompute(str(case.get("activation_checkpointing"))),
        "micro_batch": int(case["micro_batch"]), "grad_accum": _accum(case, dp),
        "measured": float(measured), "source": case["id"].split("-", 1)[0], "fp8": fp8, "kind": kind,
        "nodes": nodes, "busbw": MEASURED_BUSBW.get(case["id"].split("-", 1)[0], {}).get(nodes),
    }  # fmt: skip


def _accum(case: dict, dp: int) -> int:
    """Micro-steps a step: as stated, else the global batch over dp micro-batches (1 without either)."""
    if case.get("grad_accum"):
        return int(case["grad_accum"])
    gbs = case.get("global_batch_seqs")
    return max(1, int(gbs) // (dp * int(case["micro_batch"]))) if gbs else 1


def _hardware(c: dict, catalog: Catalog) -> tm.Hardware:
    gpu = catalog.gpus[c["gpu"]]
    network = NETWORK.get(c["gpu"], 1600.0) if c["nodes"] > 1 else None
    pool = Pool(c["gpu"], gpu, gpus_per_node=8, max_nodes=max(c["nodes"], 1), network_gbps=network,
                usd_per_node_hour=None, allreduce_busbw_gbs=c["busbw"])  # fmt: skip
    return hardware(pool, c["training"].precision)


def predict(c: dict, catalog: Catalog) -> float:
    """The time model's tokens/s per GPU."""
    hw = _hardware(c, catalog)
    flops = tm.job_flops(c["arch"], c["training"])
    t = tm.step_times(
        flops, c["arch"], c["training"], hw, np.array([c["dp"]]), np.array([c["tp"]]), np.array([c["zero"]]),
        np.array([0]), np.array([c["recompute"]]), np.array([c["micro_batch"]]), np.array([c["grad_accum"]]),
        np.array([c["pp"]]), np.array([c["virtual"]]),
    )  # fmt: skip
    tokens_per_gpu = c["micro_batch"] * c["grad_accum"] * c["training"].seq_len / (c["tp"] * c["pp"])
    return float(tokens_per_gpu / t.total[0])


def baseline(c: dict, catalog: Catalog) -> float:
    """The llm-analysis baseline's tokens/s per GPU (see module docstring)."""
    hw = _hardware(c, catalog)
    f = tm.job_flops(c["arch"], c["training"])
    non_causal = 2 * f.attention  # (the model counts the causal half)
    per_token = f.linear + non_causal + (f.forward + f.attention / 3 if c["recompute"] == 2 else 0.0)
    rate = hw.peak_tflops * 1e12 * hw.efficiency
    if c["fp8"]:
        rate = hw.fp8_tflops * 1e12 * hw.efficiency
    return rate / per_token


# GPU families whose efficiencies are fitted (one compute die each: the A100s differ in memory only, and
# the H200 has the H100's compute)
FAMILIES = {"A100": ("a100-sxm-80gb", "a100-sxm-40gb"), "H100": ("h100-sxm-80gb",)}


def fit_efficiencies(cases: list[dict], catalog: Catalog) -> dict[str, tuple[float, float, np.ndarray]]:
    """Each GPU family's matmul and attention efficiencies (fractions of peak over hardware FLOPs), fitted on
    llm-foundry's single-node 16-bit runs by least squares on the relative time a token,
    ``t ≈ matmul FLOPs / (peak · e_matmul) + attention FLOPs / (peak · e_attention)``, with the fit's
    |relative error| on each case it was fitted on."""
    out = {}
    for family, gpus in FAMILIES.items():
        chosen = [c for c in cases if c["source"] in FITTED_SOURCES and c["gpu"] in gpus and not c["fp8"]
                  and c["nodes"] == 1 and c["tp"] * c["pp"] == 1]  # fmt: skip
        a, t = [], []
        for c in chosen:
            matmuls, attention = tm.job_flops(c["arch"], c["training"]).hardware(c["recompute"])
            peak = _hardware(c, catalog).peak_tflops * 1e12
            a.append([float(matmuls) / peak, float(attention) / peak])
            t.append(1 / c["measured"])
        a_, t_ = np.array(a), np.array(t)
        (x, y), *_ = np.linalg.lstsq(a_ / t_[:, None], np.ones(len(t_)), rcond=None)
        out[family] = (1 / x, 1 / y, np.abs(t_ / (a_ @ [x, y]) - 1))
    return out


def fit(cases: list[dict], catalog: Catalog) -> None:
    """Print :func:`fit_efficiencies`."""
    rows = [[family, str(len(errs)), f"{e:.3f}", f"{a:.3f}", f"{np.median(errs):.1%}", f"{_p90(list(errs)):.1%}"]
            for family, (e, a, errs) in fit_efficiencies(cases, catalog).items()]  # fmt: skip
    print(render_table(["GPU", "cases", "matmul efficiency", "attention efficiency", "median |err|", "p90 |err|"],
                       rows, right={1, 2, 3, 4, 5}))  # fmt: skip


def load_cases(catalog: Catalog) -> tuple[list[dict], dict[str, int]]:
    """The cases in scope, and how many were left out for each reason."""
    cases, skipped = [], {}
    for path in FILES:
        for raw in read_yaml(path):
            try:
                cases.append(translate(raw, catalog))
            except OutOfScope as why:
                skipped[str(why)] = skipped.get(str(why), 0) + 1
    return cases, skipped


def _p90(es: list[float]) -> float:
    es = sorted(es)
    return es[min(len(es) - 1, math.ceil(0.9 * len(es)) - 1)]


def main(argv: list[str]) -> None:
    catalog = load_catalog()
    cases, skipped = load_cases(catalog)
    if "--fit" in argv:
        fit(cases, catalog)
        return
    rows, results = [], []
    for c in cases:
        pred, base = predict(c, catalog), baseline(c, catalog)
        err, berr = (pred - c["measured"]) / c["measured"], (base - c["measured"]) / c["measured"]
        results.append((c, abs(err), abs(berr)))
        gpus = str(c["dp"] * c["tp"] * c["pp"])
        rows.append([c["id"], c["kind"], c["gpu"], gpus, f"{c['measured']:,.0f}", f"{pred:,.0f}", f"{err:+.1%}",
                     f"{berr:+.1%}"])  # fmt: skip
    if "--cases" in argv:
        print(render_table(["case", "method", "gpu", "GPUs", "measured tok/s/GPU", "model", "error", "baseline"],
                           rows, right={3, 4, 5, 6, 7}))  # fmt: skip
        print()
    groups: dict[str, list[tuple[float, float]]] = {}
    for c, e, b in results:
        part = "fitted" if c["source"] in FITTED_SOURCES else "held out"
        for key in (
            f"part: {part}", f"source: {c['source']}", f"gpu: {c['gpu']}", f"method: {c['kind']}",
            f"seq: {bucket(c['training'].seq_len, SEQ_BUCKETS)}", f"nodes: {bucket(c['nodes'], NODE_BUCKETS)}",
            "precision: FP8" if c["fp8"] else "precision: 16-bit", "pipeline: yes" if c["pp"] > 1 else "pipeline: no",
        ):  # fmt: skip
            groups.setdefault(key, []).append((e, b))
        groups.setdefault("all", []).append((e, b))
        if c["kind"] != "pretrain":
            groups.setdefault("fine-tuning (full, LoRA, QLoRA)", []).append((e, b))
    summary = []
    for name, eb in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        es, bs = [e for e, _ in eb], [b for _, b in eb]
        better = "yes" if statistics.median(es) <= statistics.median(bs) else "no"
        summary.append([name, str(len(es)), f"{statistics.median(es):.1%}", f"{_p90(es):.1%}",
                        f"{statistics.median(bs):.1%}", f"{_p90(bs):.1%}", better])  # fmt: skip
    print(render_table(["group", "cases", "model median", "model p90", "baseline median", "baseline p90",
                        "model better"], summary, right={1, 2, 3, 4, 5}))  # fmt: skip
    total = len(cases) + sum(skipped.values())
    print(f"\nin scope: {len(cases)} of {total} cases ({len(cases) / total:.0%}); out of scope:")
    for why, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d}  {why}")


if __name__ == "__main__":
    main(sys.argv[1:])

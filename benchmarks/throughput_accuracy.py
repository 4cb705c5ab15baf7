"""Time model vs published throughput (benchmarks/throughput_public.yaml, the team's validation data).

In scope: dense models up to 75B on A100/H100/H200 SXM, bf16/fp16 or FP8 linears, no context
parallelism, no offload, full fine-tuning / pre-training FLOPs or LoRA. Each case is run with its own
layout (dp, tp, pipeline stages and their interleaving, ZeRO stage, recomputation, micro-batch,
accumulation) and compared on tokens/s per GPU. FP8 cases and pipeline cases are reported as groups of
their own. GPUs the catalog does not hold are out of scope, among
them torchtitan's H100s (96 GB HBM2e, power-capped at 500 W). Their frameworks differ in how they scale (torchao
tensorwise, Transformer Engine delayed or current scaling); the time model counts each as FP8 matmuls
with dynamic casts, which it can (the scaling choice moves the cast traffic, not the matmuls).

Usage: python benchmarks/throughput_accuracy.py
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from ftplan.arch import architecture_from_hf
from ftplan.catalog import load_catalog
from ftplan.fit import Pool, hardware
from ftplan.io import read_yaml
from ftplan.memory.setup import Fp8Setup, LoraSetup, Method, Precision, Training
from ftplan.report.tables import render_table
from ftplan.timing import model as tm

CASES = Path(__file__).with_name("throughput_public.yaml")

# Network per 8-GPU node where a case does not state it: DGX/HGX H100 8×400 Gbps NDR, DGX A100
# 8×200 Gbps HDR (shared/data/gpus.yaml inter_node_typical).
NETWORK = {"h100-sxm-80gb": 3200.0, "h200-sxm-141gb": 3200.0, "a100-sxm-80gb": 1600.0, "a100-sxm-40gb": 1600.0}


def _gpu_id(name: str) -> str | None:
    n = name.upper()
    if "HBM2E" in n and "H100" in n:  # torchtitan's Grand Teton H100s: 96 GB HBM2e capped at 500 W, not
        return None  # the catalog's 80 GB HBM3 700 W part (its bf16 and fp8 runs alike)
    if "H200" in n:
        return "h200-sxm-141gb"
    if "H100" in n and "PCIE" not in n:
        return "h100-sxm-80gb"
    if "A100" in n:
        return "a100-sxm-40gb" if "40" in n else "a100-sxm-80gb"
    return None


def _zero(sharding: str) -> int:
    s = sharding.lower()
    if "distributed optimizer" in s:
        return 1
    if "zero-1/2" in s:
        return 2
    if any(k in s for k in ("zero-3", "full_shard", "fsdp")):
        return 3
    return 0


def _recompute(text: str) -> int:
    t = text.lower()
    return 2 if t.startswith("full") else 1 if t.startswith("selective") else 0


def translate(case: dict) -> dict | None:
    """The case as (arch, training, layout, gpu) or None when it is out of the model's scope."""
    m, hw, par = case.get("model") or {}, case.get("hardware") or {}, case.get("parallelism") or {}
    meas = case.get("measured") or {}
    gpu = _gpu_id(str(hw.get("gpu", "")))
    prec = str(case.get("precision", "")).lower()
    method = str(case.get("method", ""))
    needed = ("hidden", "layers", "heads", "ffn", "vocab", "seq_len")
    fp8 = "fp8" in prec
    if gpu is None or "4-bit" in prec or "nf4" in prec or not all(m.get(k) for k in needed):
        return None
    if fp8 and method != "pretrain" and not method.startswith("full_ft"):  # FP8 is modelled for full training
        return None
    if (par.get("cp") or 1) != 1:  # context parallelism: not modelled
        return None
    if str(par.get("offload") or "none").lower() not in ("none", "none "):
        return None
    if method not in ("pretrain", "full_ft", "full_ft (SFT)", "lora") or (m.get("params") or 0) > 75e9:
        return None
    if not meas.get("tokens_per_s_per_gpu") or not case.get("micro_batch"):
        return None
    h, ffn = int(m["hidden"]), int(m["ffn"])
    gated = ffn != 4 * h
    cfg = {
        "model_type": "llama" if gated else "gpt_neox", "hidden_size": h, "num_hidden_layers": int(m["layers"]),
        "num_attention_heads": int(m["heads"]), "num_key_value_heads": int(m.get("kv_heads") or m["heads"]),
        "intermediate_size": ffn, "vocab_size": int(m["vocab"]), "tie_word_embeddings": False,
    }  # fmt: skip
    arch = architecture_from_hf(cfg, case["id"])
    count = int(hw.get("count") or 1)
    tp, pp = int(par.get("tp") or 1), int(par.get("pp") or 1)
    dp = count // (tp * pp)
    # Megatron's virtual pipeline size (vp): chunks a rank holds under the interleaved schedule
    virtual = int(par.get("vp") or 1) if pp > 1 else 1
    lora = LoraSetup(target_modules=("all-linear",)) if method == "lora" else None
    training = Training(
        method=Method.LORA if lora else Method.FULL,
        precision=Precision.FP8 if fp8 else Precision.FP16_MIXED if "fp16" in prec else Precision.BF16_MIXED,
        seq_len=int(m["seq_len"]), lora=lora,
        fp8=Fp8Setup(all_gather="all-gather" in prec) if fp8 else None,
    )  # fmt: skip
    return {
        "id": case["id"], "arch": arch, "training": training, "gpu": gpu, "dp": dp, "tp": tp, "pp": pp,
        "virtual": virtual,
        "zero": _zero(str(par.get("sharding") or "")),
        "recompute": _recompute(str(case.get("activation_checkpointing"))),
        "micro_batch": int(case["micro_batch"]), "grad_accum": _accum(case, dp),
        "measured": float(meas["tokens_per_s_per_gpu"]), "source": case["id"].split("-", 1)[0], "fp8": fp8,
    }  # fmt: skip


def _accum(case: dict, dp: int) -> int:
    """Micro-steps a step: as stated, else the global batch over dp micro-batches (1 without either)."""
    if case.get("grad_accum"):
        return int(case["grad_accum"])
    gbs = case.get("global_batch_seqs")
    return max(1, int(gbs) // (dp * int(case["micro_batch"]))) if gbs else 1


def predict(c: dict, catalog) -> float:
    gpu = catalog.gpus[c["gpu"]]
    pool = Pool(c["gpu"], gpu, gpus_per_node=8, max_nodes=1, network_gbps=NETWORK[c["gpu"]], usd_per_node_hour=None)
    hw = hardware(pool, c["training"].precision)
    flops = tm.job_flops(c["arch"], c["training"])
    t = tm.step_times(
        flops, c["arch"], c["training"], hw, np.array([c["dp"]]), np.array([c["tp"]]), np.array([c["zero"]]),
        np.array([0]), np.array([c["recompute"]]), np.array([c["micro_batch"]]), np.array([c["grad_accum"]]),
        np.array([c["pp"]]), np.array([c["virtual"]]),
    )  # fmt: skip
    tokens_per_gpu = c["micro_batch"] * c["grad_accum"] * c["training"].seq_len / (c["tp"] * c["pp"])
    return float(tokens_per_gpu / t.total[0])


def main() -> None:
    catalog = load_catalog()
    cases = [c for c in (translate(x) for x in read_yaml(CASES)) if c is not None]
    rows, errs = [], []
    for c in cases:
        pred = predict(c, catalog)
        err = (pred - c["measured"]) / c["measured"]
        errs.append((c, abs(err)))
        gpus = str(c["dp"] * c["tp"] * c["pp"])
        rows.append([c["id"], c["gpu"], gpus, f"{c['measured']:,.0f}", f"{pred:,.0f}", f"{err:+.1%}"])
    print(
        render_table(
            ["case", "gpu", "GPUs", "measured tok/s/GPU", "model tok/s/GPU", "error"], rows, right={2, 3, 4, 5}
        )
    )
    print()
    groups: dict[str, list[float]] = {}
    for c, e in errs:
        groups.setdefault(f"source {c['source']}", []).append(e)
        groups.setdefault(f"gpu {c['gpu']}", []).append(e)
        groups.setdefault("FP8" if c["fp8"] else "16-bit", []).append(e)
        groups.setdefault("pipeline (pp > 1)" if c["pp"] > 1 else "no pipeline", []).append(e)

    groups["all"] = [e for _, e in errs]
    summary = []
    for name, es in sorted(groups.items()):
        es = sorted(es)
        p90 = es[min(len(es) - 1, math.ceil(0.9 * len(es)) - 1)]
        summary.append([name, str(len(es)), f"{statistics.median(es):.1%}", f"{p90:.1%}"])
    print(render_table(["group", "cases", "median |err|", "p90 |err|"], summary, right={1, 2, 3}))


if __name__ == "__main__":
    main()

"""Rebuild ``catalogs/gpus.yaml`` and ``catalogs/instances.csv`` from the team's source data.

Run from the repository root with the source data beside it::

    python tools/build_catalogs.py ../shared/data

The source files carry per-entry provenance; this script keeps it (``sources`` per GPU,
``source`` and ``as_of`` per instance row) and normalises names and units to the catalog
schema documented in ``catalogs/README.md``. It is a maintenance tool, not part of the package.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import yaml

GPU_IDS = {
    "H200-SXM": "h200-sxm-141gb",
    "H100-SXM": "h100-sxm-80gb",
    "H100-PCIe": "h100-pcie-80gb",
    "H100-NVL": "h100-nvl-94gb",
    "A100-80GB-SXM": "a100-sxm-80gb",
    "A100-80GB-PCIe": "a100-pcie-80gb",
    "A100-40GB-SXM": "a100-sxm-40gb",
    "A100-40GB-PCIe": "a100-pcie-40gb",
    "L40S": "l40s-48gb",
    "L4": "l4-24gb",
    "A10G": "a10g-24gb",
    "A10": "a10-24gb",
    "T4": "t4-16gb",
    "V100-SXM2-16GB": "v100-sxm2-16gb",
    "V100-SXM2-32GB": "v100-sxm2-32gb",
    "RTX-4090": "rtx-4090-24gb",
    "RTX-3090": "rtx-3090-24gb",
    "RTX-A6000": "rtx-a6000-48gb",
    "MI300X": "mi300x-192gb",
    "MI250X": "mi250x-128gb",
    "Gaudi2": "gaudi2-96gb",
    "Gaudi3": "gaudi3-128gb",
    "B200": "b200-180gb",
    "B300-SXM": "b300-sxm-288gb",
    "GB200": "gb200-186gb",
    "GB300": "gb300-288gb",
    "MI325X": "mi325x-256gb",
    "MI355X": "mi355x-288gb",
}

# Host link per architecture: PCIe generation x16, unidirectional GB/s (PCI-SIG: Gen3 ~15.75,
# Gen4 ~31.5, Gen5 ~63). Source data states Gen5 for Hopper and Gen4 for A100 SXM.
HOST_LINK_GBS = {"hopper": 63.0, "blackwell": 63.0, "ampere": 31.5, "ada": 31.5, "turing": 15.75,
                 "volta": 15.75, "cdna3": 63.0, "cdna4": 63.0, "cdna2": 31.5, "gaudi": 63.0}

# (cloud, instance_type) -> catalog GPU id where the accelerator name alone is ambiguous.
INSTANCE_GPU_OVERRIDES = {
    ("lambda", "gpu_1x_h100_pcie"): "h100-pcie-80gb",
    ("azure", "Standard_NC40ads_H100_v5"): "h100-nvl-94gb",
    ("azure", "Standard_NC80adis_H100_v5"): "h100-nvl-94gb",
    ("azure", "Standard_NC24ads_A100_v4"): "a100-pcie-80gb",
    ("azure", "Standard_NC48ads_A100_v4"): "a100-pcie-80gb",
    ("azure", "Standard_NC96ads_A100_v4"): "a100-pcie-80gb",
    ("runpod", "1x_A100-80GB_SECURE"): "a100-pcie-80gb",
    ("runpod", "8x_A100-80GB_SECURE"): "a100-pcie-80gb",
    ("runpod", "8x_H100_SECURE"): "h100-pcie-80gb",
}
ACCELERATOR_GPU = {
    "T4": "t4-16gb", "A10G": "a10g-24gb", "A10": "a10-24gb", "L4": "l4-24gb", "L40S": "l40s-48gb",
    "V100": "v100-sxm2-16gb", "V100-32GB": "v100-sxm2-32gb", "A100": "a100-sxm-40gb",
    "A100-80GB": "a100-sxm-80gb", "A100-80GB-SXM": "a100-sxm-80gb", "H100": "h100-sxm-80gb",
    "H100-SXM": "h100-sxm-80gb", "H100-MEGA": "h100-sxm-80gb", "H200": "h200-sxm-141gb",
    "H200-SXM": "h200-sxm-141gb", "B200": "b200-180gb", "B300": "b300-sxm-288gb", "MI300X": "mi300x-192gb",
    "RTX3090": "rtx-3090-24gb", "RTX4090": "rtx-4090-24gb",
}
AS_OF = {"skypilot-org/skypilot-catalog catalogs/v7": "2025-H1", "skypilot-org/skypilot-catalog catalogs/v8": "2025-11",
         "anycloud-sh/catalog": "2026-04-02"}


def _price_per_gpu(entry: dict) -> tuple[float | None, str | None, str | None]:
    """Pick the most recent purchase price per GPU; a range is read as its midpoint."""
    best = None
    for p in entry.get("purchase_price") or []:
        usd = p.get("usd_per_gpu")
        if usd is None and "per" in str(p.get("unit", "")).lower():
            usd = p.get("usd")
        if usd is None:
            continue
        if isinstance(usd, str):
            lo, hi = (float(x) for x in usd.split("-"))
            usd = (lo + hi) / 2
        date = str(p.get("date"))
        if best is None or date >= best[1]:
            best = (float(usd), date, p.get("source"))
    return best if best else (None, None, None)


# Achieved fraction of dense bf16 peak (MFU) the time model starts from, per GPU, with its source.
# Medians of the llm-foundry BF16 FSDP benchmark tables (shared/data/time_model_notes.md §3):
# A100 1-30B on 8-128 GPUs, seq 2k-8k: 54.5%; H100 1-70B on 8-512 GPUs: 41%. H200 has the H100's
# compute (same notes, §1.4). Other GPUs have no published fine-tuning MFU in the team's data.
# Matmul and attention efficiencies (fractions of peak over hardware FLOPs), as ``benchmarks/throughput_accuracy.py
# --fit`` prints them: fitted on llm-foundry's single-node runs; an H200 takes the H100's.
_FITTED = (
    "fitted on llm-foundry's {runs} over hardware FLOPs, beside the memory-bound operations, the GEMMs' per-shape"
    " time (timing.model GEMM_*) and eager PyTorch's per-operation time the model books apart"
    " (benchmarks/throughput_accuracy.py --fit)"
)
_A100 = (0.716, 0.374, _FITTED.format(runs="36 single-node A100 (40 and 80 GB) BF16 runs"))
_H100 = (0.589, 0.203, _FITTED.format(runs="17 single-node H100 BF16 runs"))
EFFICIENCY = {
    "a100-sxm-80gb": _A100,
    "a100-sxm-40gb": _A100,
    "h100-sxm-80gb": _H100,
    "h200-sxm-141gb": (*_H100[:2], f"the H100's, {_H100[2]}; H200 has the H100's compute (time_model_notes \u00a71.4)"),
}

# Scale-out network per node (Gbps) of the instance types the source data names
# (shared/data/gpus.yaml `inter_node_typical`). Instances not listed have no published
# multi-node network in the team's data: ftplan keeps jobs on them within one node.
NETWORK_GBPS = {
    ("aws", "p5.48xlarge"): (3200, "EFA v2 32x100 Gbps"),
    ("aws", "p5e.48xlarge"): (3200, "EFA v2 32x100 Gbps"),
    ("aws", "p5en.48xlarge"): (3200, "EFA v3 16x200 Gbps"),
    ("aws", "p4d.24xlarge"): (400, "EFA 4x100 Gbps"),
    ("aws", "p4de.24xlarge"): (400, "EFA 4x100 Gbps"),
    ("aws", "p6-b200.48xlarge"): (3200, "EFA 8x400 Gbps"),
    ("aws", "g6e.48xlarge"): (400, "up to 400 Gbps EFA (AWS product page)"),
    ("aws", "g5.48xlarge"): (100, "100 Gbps EFA"),
    ("aws", "g4dn.12xlarge"): (50, "50-100 Gbps (lower bound)"),
    ("aws", "p3.16xlarge"): (25, "25 Gbps"),
    ("aws", "p3dn.24xlarge"): (100, "100 Gbps EFA"),
    ("azure", "Standard_ND96isr_H100_v5"): (3200, "8x400 Gbps NDR InfiniBand"),
    ("azure", "Standard_ND96isr_H200_v5"): (3200, "8x400 Gbps NDR InfiniBand"),
    ("azure", "Standard_ND96amsr_A100_v4"): (1600, "8x200 Gbps HDR InfiniBand"),
    ("azure", "Standard_ND96asr_v4"): (1600, "8x200 Gbps HDR InfiniBand"),
    ("azure", "Standard_ND96isr_MI300X_v5"): (3200, "8x400 Gbps InfiniBand (Azure docs)"),
    ("gcp", "a3-highgpu-8g"): (800, "GPUDirect-TCPX 4x200 Gbps GPU fabric"),
    ("gcp", "a3-megagpu-8g"): (1600, "GPUDirect-TCPXO 8x200 Gbps"),
}


# GPUs whose NVLink domain has third-generation (or later) NVSwitches, which reduce all-reduce traffic in
# the switch (NVLink SHARP; NCCL's NVLS algorithm since 2.17, on H100-class systems and later: NVIDIA/nccl#807).
NVLS = {"h100-sxm-80gb", "h200-sxm-141gb", "b200-180gb", "b300-sxm-288gb", "gb200-186gb", "gb300-288gb"}

# Maximum achievable matmul TFLOP/s, bf16 and fp8 (ml-engineering @744d01e, compute/accelerator/README.md,
# "Maximum Achievable Matmul FLOPS comparison table"; its note: H200 is the same as H100 in bf16). The
# time model runs FP8 matmuls at the fraction of the 16-bit efficiency these imply (timing/model.py).
MAMF = {
    "a100-sxm-80gb": {"bf16": 271.2}, "a100-sxm-40gb": {"bf16": 271.2}, "a100-pcie-80gb": {"bf16": 252.9},
    "a100-pcie-40gb": {"bf16": 252.9}, "h100-sxm-80gb": {"bf16": 794.5, "fp8": 1402.6},
    "h200-sxm-141gb": {"bf16": 794.5, "fp8": 1453.4}, "b200-180gb": {"bf16": 1745.0, "fp8": 3432.5},
    "b300-sxm-288gb": {"bf16": 1769.0, "fp8": 3353.3}, "gb200-186gb": {"bf16": 1822.0, "fp8": 3615.6},
    "mi300x-192gb": {"bf16": 668.4}, "mi325x-256gb": {"bf16": 784.9}, "mi355x-288gb": {"bf16": 1565.0},
    "gaudi2-96gb": {"fp8": 826.5}, "gaudi3-128gb": {"bf16": 1243.0, "fp8": 1289.5},
}
# GPUs with no MAMF measurement of their own whose chip the table measured in another package: a GB300's GPUs
# are B300s (tools/gpus_2025.yaml), so it takes the B300's measured fractions of peak at its own peaks. The one
# chip the table measures in both packages, B200 and GB200, gives FP8-to-bf16 ratios within 1% (0.984, 0.992).
SAME_CHIP = {"gb300-288gb": "b300-sxm-288gb"}


def _mamf(gid: str, tflops: dict, peaks: dict[str, dict]) -> dict[str, float] | None:
    """The GPU's measured MAMF, or its chip's (``SAME_CHIP``) scaled from that GPU's peaks to its own."""
    if gid in MAMF or gid not in SAME_CHIP:
        return MAMF.get(gid)
    chip = SAME_CHIP[gid]
    return {k: round(v * tflops[k] / peaks[chip][k], 1) for k, v in MAMF[chip].items()}


def build_gpus(src: Path) -> dict:
    data = yaml.safe_load((src / "gpus.yaml").read_text())
    added = yaml.safe_load(Path(__file__).with_name("gpus_2025.yaml").read_text())["gpus"]
    out = []
    peaks = {GPU_IDS[g["id"]]: g["tflops"] for g in data["gpus"] + added}
    for g in data["gpus"] + added:
        gid = GPU_IDS[g["id"]]
        reported = g.get("memory_mib_reported")
        if reported:
            mem_mib, mem_note = int(reported), "nvidia-smi total seen in public dumps"
        else:
            mem_mib = int(g["memory_gb_marketed"] * 1024)
            mem_note = "not seen in a dump: marketed GB read as GiB (unverified)"
        usd, date, psrc = _price_per_gpu(g)
        intra = g.get("intra_node") or {}
        nodes = g.get("typical_node_gpus")
        node_gpus = max(nodes) if isinstance(nodes, list) else int(nodes) if isinstance(nodes, int) else 8
        arch = g.get("arch", "")
        tf = g["tflops"]
        out.append({
            "id": gid,
            "name": g["id"],
            "aliases": sorted({str(a) for a in g.get("aliases") or []} | {g["id"]}),
            "vendor": g.get("vendor"),
            "arch": arch,
            "memory_mib": mem_mib,
            "memory_note": mem_note,
            "tflops": {k: tf.get(k) for k in ("fp32", "tf32", "bf16", "fp16", "fp8")},
            "hbm_gbs": g.get("hbm_bw_gbs"),
            "intra_node_gbs": intra.get("bw_gbs_unidir"),
            "intra_node_link": intra.get("type"),
            "efficiency": EFFICIENCY.get(gid, (None,))[0],
            **({"attention_efficiency": EFFICIENCY[gid][1]} if gid in EFFICIENCY else {}),
            "efficiency_source": EFFICIENCY.get(gid, (None, None, None))[2],
            "host_link_gbs": HOST_LINK_GBS.get(arch.lower(), 31.5),
            "max_gpus_per_node": node_gpus,
            "nvlink_domain": g.get("nvlink_domain"),
            **({"nvls": True} if gid in NVLS else {}),
            "mamf_tflops": _mamf(gid, g["tflops"], peaks),
            "bf16": tf.get("bf16") is not None,
            "purchase_usd_per_gpu": usd,
            "purchase_date": date,
            "purchase_source": psrc,
            "confidence": g.get("confidence"),
            "sources": g.get("sources") or [],
        })
    return {"schema_version": 1, "sources": data.get("sources", {}), "gpus": out}


def build_instances(src: Path) -> list[dict]:
    rows = []
    with (src / "cloud_instances.csv").open() as fh:
        for r in csv.DictReader(fh):
            key = (r["cloud"], r["instance_type"])
            gpu = INSTANCE_GPU_OVERRIDES.get(key) or ACCELERATOR_GPU.get(r["accelerator_name"])
            if gpu is None:
                continue  # GH200, RTX4000-Ada, B300: no GPU spec in the source data
            host = "" if r["cloud"] == "runpod" else r["memory_gib"]
            src_text = r["source"]
            as_of = next((v for k, v in AS_OF.items() if src_text.startswith(k)), "")
            rows.append({
                "cloud": r["cloud"], "region": r["region"], "instance_type": r["instance_type"],
                "gpu": gpu, "gpus_per_node": int(r["accelerator_count"]), "vcpus": float(r["vcpus"]),
                "host_memory_gib": host, "on_demand_usd_per_h": r["price_usd_hr"],
                "spot_usd_per_h": r["spot_price_usd_hr"], "source": src_text, "as_of": as_of,
                "network_gbps": NETWORK_GBPS.get(key, ("", ""))[0],
                "network_source": NETWORK_GBPS.get(key, ("", ""))[1],
                "notes": re.sub(r"\s+", " ", r["notes"]).strip(),
            })
    return rows


def main(src: str) -> None:
    root = Path(__file__).resolve().parents[1] / "catalogs"
    gpus = build_gpus(Path(src))
    header = ("# GPU catalog for ftplan, built by tools/build_catalogs.py from the team's source data.\n"
              "# Columns, units and sources: catalogs/README.md. TFLOP/s are dense.\n")
    (root / "gpus.yaml").write_text(header + yaml.safe_dump(gpus, sort_keys=False, width=110))
    rows = build_instances(Path(src))
    with (root / "instances.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# Encoder-decoder and encoder-only models: fields as in each model's config.json on the
# Hugging Face hub (URL in `source`); official parameter counts from the model cards / papers.
EXTRA_MODELS = [
    {"id": "t5-small", "hf_repo": "google-t5/t5-small", "params_official": 60.5e6,
     "source": "https://huggingface.co/google-t5/t5-small/blob/main/config.json; 60M per T5 paper (Raffel et al. 2020) Table 14",
     "config": {"model_type": "t5", "d_model": 512, "d_ff": 2048, "d_kv": 64, "num_heads": 8, "num_layers": 6,
                "num_decoder_layers": 6, "vocab_size": 32128, "feed_forward_proj": "relu", "tie_word_embeddings": True,
                "relative_attention_num_buckets": 32, "dropout_rate": 0.1}},
    {"id": "t5-base", "hf_repo": "google-t5/t5-base", "params_official": 223e6,
     "source": "https://huggingface.co/google-t5/t5-base/blob/main/config.json; 220M per T5 paper Table 14",
     "config": {"model_type": "t5", "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 12,
                "num_decoder_layers": 12, "vocab_size": 32128, "feed_forward_proj": "relu", "tie_word_embeddings": True,
                "relative_attention_num_buckets": 32, "dropout_rate": 0.1}},
    {"id": "flan-t5-base", "hf_repo": "google/flan-t5-base", "params_official": 248e6,
     "source": "https://huggingface.co/google/flan-t5-base/blob/main/config.json; HF safetensors metadata 248M",
     "config": {"model_type": "t5", "d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12,
                "num_decoder_layers": 12, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                "tie_word_embeddings": False, "relative_attention_num_buckets": 32, "dropout_rate": 0.1}},
    {"id": "flan-t5-large", "hf_repo": "google/flan-t5-large", "params_official": 783e6,
     "source": "https://huggingface.co/google/flan-t5-large/blob/main/config.json; HF safetensors metadata 783M",
     "config": {"model_type": "t5", "d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24,
                "num_decoder_layers": 24, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                "tie_word_embeddings": False, "relative_attention_num_buckets": 32, "dropout_rate": 0.1}},
    {"id": "flan-t5-xl", "hf_repo": "google/flan-t5-xl", "params_official": 2.85e9,
     "source": "https://huggingface.co/google/flan-t5-xl/blob/main/config.json; HF safetensors metadata 2.85B",
     "config": {"model_type": "t5", "d_model": 2048, "d_ff": 5120, "d_kv": 64, "num_heads": 32, "num_layers": 24,
                "num_decoder_layers": 24, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                "tie_word_embeddings": False, "relative_attention_num_buckets": 32, "dropout_rate": 0.1}},
    {"id": "bert-base-uncased", "hf_repo": "google-bert/bert-base-uncased", "params_official": 110e6,
     "source": "https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json; 110M per BERT paper (Devlin et al. 2019)",
     "config": {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}},
    {"id": "bert-large-uncased", "hf_repo": "google-bert/bert-large-uncased", "params_official": 336e6,
     "source": "https://huggingface.co/google-bert/bert-large-uncased/blob/main/config.json; 336M per HF safetensors metadata (the BERT paper rounds to 340M)",
     "config": {"model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                "intermediate_size": 4096, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}},
    {"id": "roberta-base", "hf_repo": "FacebookAI/roberta-base", "params_official": 125e6,
     "source": "https://huggingface.co/FacebookAI/roberta-base/blob/main/config.json; 125M per HF safetensors metadata",
     "config": {"model_type": "roberta", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}},
    {"id": "roberta-large", "hf_repo": "FacebookAI/roberta-large", "params_official": 355e6,
     "source": "https://huggingface.co/FacebookAI/roberta-large/blob/main/config.json; 355M per HF safetensors metadata",
     "config": {"model_type": "roberta", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                "intermediate_size": 4096, "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}},
]

HF_FIELDS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
             "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "rope_theta",
             "num_local_experts", "num_experts_per_tok", "attention_bias", "sliding_window", "query_pre_attn_scalar"]
ACT = {"swiglu": "silu", "swiglu-moe": "silu", "geglu": "gelu_pytorch_tanh"}
# config.json fields the source data leaves out (same source URL as the entry)
CONFIG_ADDITIONS = {"phi-3-mini-4k": {"sliding_window": 2047}}


def build_models(src: Path) -> dict:
    data = yaml.safe_load((src / "models.yaml").read_text())
    out = []
    for m in data["models"]:
        cfg = {"model_type": m["family"]}
        cfg.update({k: m[k] for k in HF_FIELDS if k in m})
        act_key = "hidden_activation" if m["family"] == "gemma2" else "hidden_act"
        cfg[act_key] = ACT[m["mlp"]]
        if m["family"] == "qwen2":
            cfg.pop("attention_bias", None)  # Qwen2 always has q/k/v biases; not a config field
        cfg.update(CONFIG_ADDITIONS.get(m["id"], {}))
        entry = {"id": m["id"], "hf_repo": m["hf_repo"], "params_official": float(m["params_official"])}
        if "params_active_official" in m:
            entry["params_active_official"] = float(m["params_active_official"])
        entry["source"] = m["source"]
        entry["config"] = cfg
        out.append(entry)
    out.extend(EXTRA_MODELS)
    for m in yaml.safe_load(Path(__file__).with_name("models_2025.yaml").read_text()):
        for key in ("params_official", "params_active_official"):
            if key in m:
                m[key] = float(m[key])  # YAML 1.1 reads 0.6e9 as a string
        out.append(m)
    return {"schema_version": 1, "models": out}


def write_models(src: str) -> None:
    root = Path(__file__).resolve().parents[1] / "catalogs"
    header = ("# Model catalog for ftplan, built by tools/build_catalogs.py. `config` holds the fields of each\n"
              "# model's Hugging Face config.json (field names as there); `source` is where they were read.\n")
    (root / "models.yaml").write_text(header + yaml.safe_dump(build_models(Path(src)), sort_keys=False, width=110))


if __name__ == "__main__":
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
    main(data_dir)
    write_models(data_dir)

"""Time model vs published throughput, beside a plain FLOPs ÷ (peak × efficiency) baseline.

Cases: ``throughput_public.yaml`` (pre-training and a few fine-tuning runs) and
``throughput_finetune_public.yaml`` (LoRA, QLoRA and full fine-tuning: Qwen's README, NeMo Automodel,
LitGPT, universal-llm-trainer; copied from the team's validation data with its provenance). Each case
runs with its own layout (dp, tp, pipeline stages and their interleaving, ZeRO stage, recomputation,
micro-batch, accumulation, LoRA rank and targets; a MoE's expert-parallel degree, at a capacity factor of 1
where the source spreads the tokens evenly over the experts; an expert-parallel group wider than the data- and
context-parallel ranks, which Megatron builds over tensor-parallel ranks too, is out of scope) and its stack's
kernels (``FUSED_SOURCES``), and is compared on tokens/s per GPU: as published, or a source's TFLOP/s per GPU
over the FLOPs a token its own formula counts (``FLOP_CONVENTIONS``).

A source that republishes a configuration release after release (Megatron-Bridge's performance summary: the same
system, model, precision, layout and batch) is held at the newest release that publishes it, once: the software a
plan made today runs, and no configuration counted twice. Only rows in precisions the model expresses are copied
(not MXFP8 or NVFP4).

Model dimensions come from the case, else from the catalog by the model's name (``MODEL_NAMES`` maps
the sources' spellings to catalog ids; ``SOURCE_CONFIGS`` holds Qwen1's, Nemotron's and nanotron's benchmark
models, which the catalog lacks). Context-parallel cases run over ``cp`` ranks a sequence (Megatron's ring
attention, the time model's ``ring``). Out of scope, each counted by its reason: GPUs and models the catalog does
not hold, offload (stated in its own field or in the sharding's description), 4-bit weights other than bitsandbytes' NF4
(GPTQ's kernels are not the QLoRA the model costs), variable-length batches whose length distribution the
source does not publish, a pipeline without a stated micro-batch, FP8 outside full training, and a published
rate that would run the job's FLOPs as configured faster than its GPU's dense peak (it counts tokens otherwise).

Baseline: the llm-analysis formula — the job's weight-matmul FLOPs (6N full, 4N + adapters with frozen
weights), attention counted without causal halving (``12·L·s·d_q`` a token), a full recomputation's extra
forward where the case recomputes — at the GPU's peak × an efficiency of its own, with no communication. The
catalog's efficiencies are the weight matmuls' alone (the model books memory-bound work and launches apart), so
the baseline gets the fraction of peak that suits its formula: least squares on the same llm-foundry runs the
catalog's are fitted on, per GPU family, as a factor on the catalog's (``baseline_scales``; other GPUs take the
H100's, as the catalog's default efficiency does).

Fitted vs held out: the catalog's GPU efficiencies are fitted on llm-foundry's single-node runs and the
per-operation dispatch time on Qwen's (``--fit``), so those two sources are the part the constants were
fitted on and every other source is held out; the summary prints both parts separately, then every group again
over the held-out part alone.

Configuration as published vs inferred: a case whose source leaves part of the run to inference (the validation
data's own grade B, confidence below high or list of inferred fields, figures recalled rather than read from the
source, a micro-batch or a step's accumulation the benchmark assumes because the source states neither, or a global
batch that disagrees with dp × micro-batch × accumulation, so that one of the stated figures is wrong) is grouped
apart, so the summary shows how much of the error sits where the configuration itself is uncertain; every target
is on all cases.

Usage: python benchmarks/throughput_accuracy.py [--cases] [--fit]
"""

from __future__ import annotations

import math
import re
import signal
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.bands import NODE_BUCKETS, SEQ_BUCKETS, bucket
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.fit import Pool, hardware
from ftplan.io import read_yaml
from ftplan.memory.pipeline import PipelineSplit
from ftplan.memory.setup import (
    Attention,
    AttentionKernel,
    AttentionMask,
    ExpertDispatch,
    Fp8Setup,
    Kernels,
    LoraSetup,
    Method,
    Precision,
    Training,
)
from ftplan.report.tables import render_table
from ftplan.timing import dispatch
from ftplan.timing import model as tm

HERE = Path(__file__).parent
FILES = (HERE / "throughput_public.yaml", HERE / "throughput_finetune_public.yaml")
FITTED_SOURCES = {"foundry", "qwen1"}  # the catalog's efficiencies (llm-foundry) and the dispatch time (Qwen)

# Network per node (the catalog's node: 8 GPUs, a GB200/GB300 compute tray's 4) where a case does not state it:
# DGX/HGX H100 8×400 Gbps NDR, DGX A100 8×200 Gbps HDR (shared/data/gpus.yaml inter_node_typical); DGX B200 the
# H100's 8×400 Gbps ConnectX-7; a GB200 tray one 400 Gbps ConnectX-7 port a GPU (ml-engineering network/README.md,
# tools/gpus_2025.yaml), and a GB300 tray taken as the GB200's (no source states its ports; its runs of 72 GPUs or
# fewer never leave the rack's NVLink); a B300 node 6,400 Gbps (AWS p6-b300's 16 × 400 Gbps, shared/data/gpus.yaml
# inter_node_reference_gbps_per_node: the one B300 node the reference data describe).
NETWORK = {
    "h100-sxm-80gb": 3200.0, "h200-sxm-141gb": 3200.0, "a100-sxm-80gb": 1600.0, "a100-sxm-40gb": 1600.0,
    "b200-180gb": 3200.0, "b300-sxm-288gb": 6400.0, "gb200-186gb": 1600.0, "gb300-288gb": 1600.0,
}  # fmt: skip

# Bus bandwidth the source measured on its own cluster, which a pool states (``allreduce_busbw_gbs``):
# the Ultra-Scale Playbook's 8×H100 nodes, all-reduce of 256 MB by node count (its ``pp_comm_bandwidth``
# data; time_model_notes §2.1).
MEASURED_BUSBW = {"usp": {1: None, 2: 362.0, 4: 160.0, 8: 99.6, 16: 84.7, 32: 64.9, 64: 32.9}}

# The sources' model names → catalog ids (an HF checkpoint name first where the case gives one).
# Llama 3.3 70B has Llama 3.1 70B's architecture (meta-llama model cards).
MODEL_NAMES = {
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/llama-3.1-70b": "llama-3.1-70b",
    "qwen/qwen3-30b-a3b": "qwen3-30b-a3b",
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "deepseek-ai/deepseek-v3": "deepseek-v3",
    "meta-llama/llama-3.3-70b-instruct": "llama-3.1-70b",
    "qwen/qwen2.5-7b": "qwen2.5-7b",
    "qwen/qwen2.5-32b-instruct": "qwen2.5-32b",
    "llama 3.1 8b": "llama-3.1-8b",
    "llama 3.1 70b": "llama-3.1-70b",
    "llama 3.1 405b": "llama-3.1-405b",
    "llama 2 7b": "llama-2-7b",
    "llama 2 13b": "llama-2-13b",
    "llama-2 7b": "llama-2-7b",
    "llama2-13b": "llama-2-13b",
    "llama2-70b": "llama-2-70b",
    "phi3-mini (3.8b)": "phi-3-mini-4k",
    "gemma 7b": "gemma-7b",
    "llama2-7b": "llama-2-7b",
    "deepseekv3": "deepseek-v3",
    "gpt oss 120b": "gpt-oss-120b",
    "qwen3_30b_a3b": "qwen3-30b-a3b",
    "qwen3_235b_a22b": "qwen3-235b-a22b",
}


# NeMo's GPT3 rows state no vocabulary: its throughput tables count GPT3's as 51,200 (``LLM_VOCAB_SIZE_MAP``,
# nemo/collections/common/parts/perf_metrics_utils.py; GPT-2's 50,257 tokens padded by Megatron).
NEMO_SOURCES = {"nemo", "nemo2407"}
NEMO_GPT3_VOCAB = 51200


# Models the catalog lacks, as the llama-shaped configuration they equal (time-model FLOPs only). Qwen1
# (QwenLM/Qwen): layers, heads and width from the Qwen technical report (arXiv 2309.16609, Table 1) and
# tech_memo.md; untied embeddings; SwiGLU halves of each checkpoint's config.json ``intermediate_size``
# (which counts both: 11008, 22016, 27392, 49152); vocabularies of 151,936 (1.8B, 7B) and 152,064 (14B, 72B).
# Its attention projects q, k and v with one linear, ``c_attn`` (h → 3h, with a bias), and ``c_proj`` back; its MLP
# is ``w1`` (up), ``w2`` (gate, through SiLU) and ``c_proj`` (modeling_qwen.py's QWenAttention and QWenMLP): five
# linears a layer, so LoRA on all of them (its finetune.py targets c_attn, c_proj, w1, w2) runs five adapters, one
# where a Llama's q, k and v run three (QWEN1_LINEARS, applied over the Llama reading of the configuration).
def _qwen1(hidden: int, layers: int, heads: int, ffn: int, vocab: int) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "intermediate_size": ffn, "vocab_size": vocab,
            "tie_word_embeddings": False}  # fmt: skip


# Nemotron (NeMo's ``Nemotron3Config22B`` and ``Nemotron4Config340B``, nemo/collections/llm/gpt/model/nemotron.py):
# a squared-ReLU MLP without a gate (a two-matrix MLP, as StarCoder2's), the vocabulary of NeMo's
# ``LLM_VOCAB_SIZE_MAP`` (nemo/collections/common/parts/perf_metrics_utils.py), which its throughput tables use.
def _nemotron(hidden: int, layers: int, heads: int, kv_heads: int, ffn: int) -> dict:
    return {"model_type": "starcoder2", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": ffn,
            "vocab_size": 256000, "tie_word_embeddings": False, "use_bias": False}  # fmt: skip


# The Ultra-Scale Playbook's benchmark models (nanotron's scripts/scaling_benchmarks.py, e24d2483, which generated
# its runs: ``model_configs`` as layers, width, heads, MLP width; ``NUM_KEY_VALUE_HEADS = None``, so as many key/value
# heads as heads, which its TP-16 and TP-32 runs need; embeddings tied below an MLP width of 10,000; a vocabulary of
# 131,072, ``VOCAB_SIZES``). The "80B" is its 70B shape with full multi-head attention. The heatmap's MFU agrees:
# over 6N + 12·layers·width·4096 FLOPs a token its tokens/s gives N = 1.34, 3.57, 8.85 and 80.3 B on every row without
# a pipeline, these shapes' parameter counts within 0.5% (tests/test_throughput_efficiency.py).
def _nanotron(layers: int, hidden: int, heads: int, ffn: int) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "intermediate_size": ffn, "vocab_size": 131072,
            "tie_word_embeddings": ffn < 10_000}  # fmt: skip


SOURCE_CONFIGS = {
    "nanotron benchmark 1b": _nanotron(16, 2048, 32, 8192),
    "nanotron benchmark 3b": _nanotron(28, 3072, 32, 8192),
    "nanotron benchmark 8b": _nanotron(32, 4096, 32, 14336),
    "nanotron benchmark 80b": _nanotron(80, 8192, 64, 28672),
    "nemotron-22b": _nemotron(6144, 40, 48, 48, 24576),
    "nemotron-340b": _nemotron(18432, 96, 96, 8, 73728),
    "qwen-1.8b (qwen1 series)": _qwen1(2048, 24, 16, 5504, 151936),
    "qwen-7b (qwen1 series)": _qwen1(4096, 32, 32, 11008, 151936),
    "qwen-14b (qwen1 series)": _qwen1(5120, 40, 40, 13696, 152064),
    "qwen-72b (qwen1 series)": _qwen1(8192, 80, 64, 24576, 152064),
}  # fmt: skip
QWEN1_LINEARS = {
    "fused_qkv": True,
    "qkv_bias": True,
    "names": dict(qkv="c_attn", o="c_proj", gate="w2", up="w1", down="c_proj", router="gate"),
}
SOURCE_LINEARS = {name: QWEN1_LINEARS for name in SOURCE_CONFIGS if name.endswith("(qwen1 series)")}


# Sources whose stacks run fused kernels (``kernels: fused``): Megatron-LM/Megatron-Core and NeMo (fused softmax,
# bias-activation and norm kernels; Transformer Engine), NeMo Automodel (Transformer Engine attention and its
# Triton LoRA kernel, stated per case) and torchtune (torch.compile on, per its README). Every other source runs
# eager PyTorch: Transformers + PEFT (Qwen, universal-llm-trainer), Composer (llm-foundry), nanotron (the
# Ultra-Scale Playbook) and torchtitan, but where a case states torch.compile in its precision.
FUSED_SOURCES = {"mbridge", "nemo", "nemo2407", "automodel", "torchtune", "narayanan21", "korthikanti22", "mcore"}
# Stacks that run attention through Transformer Engine, which prefers cuDNN's fused attention on Hopper (NeMo's
# memory-optimisation guide): Megatron-Core, NeMo and Megatron-Bridge, and NeMo Automodel's cases that state TE's
# DotProductAttention; every other stack runs FlashAttention-2 or SDPA's flash backend (``attention_kernel``).
TE_ATTENTION_SOURCES = {"mbridge", "nemo", "nemo2407", "mcore"}
# Stacks whose FP8 linears cast each weight once a step and keep the float8 copies for the step's micro-batches
# (``fp8.weight_cache``): Transformer Engine's linears cache them when told which micro-batch is a step's first
# (``is_first_microbatch``, transformer_engine/pytorch/module/linear.py), which Megatron-Core's pipeline schedules
# do for every model it runs (``forward_step``: ``model.set_is_first_microbatch()``), NeMo's and Megatron-Bridge's
# included.
FP8_WEIGHT_CACHE_SOURCES = {"mbridge", "nemo", "nemo2407", "mcore"}


# Sources whose attention materialises its scores (``attention: eager`` on a fused stack): Megatron-LM before
# FlashAttention (2021–22: QKᵀ and the weighted sum as batched matmuls over every query-key pair, between them its
# fused scale-mask-softmax kernel), which Korthikanti et al. 2022 count as the 5·a·s²·b bytes of activations a
# layer its softmax output and attention dropout store (§4.1), with Megatron-LM's default attention dropout of 0.1
# (``--attention-dropout``, megatron/arguments.py).
EAGER_ATTENTION_SOURCES = {"narayanan21", "korthikanti22"}
MEGATRON_ATTENTION_DROPOUT = 0.1


def _tp_overlap(case: dict, source: str) -> bool:
    """Whether the case's stack overlaps tensor parallelism's collectives with its matmuls (``tp_overlap``): where
    the case says so (its ``parallelism.tp_overlap``, or Megatron's ``--tp-comm-overlap`` among its
    ``comm_overlap`` flags), and Megatron-Bridge's Llama runs, whose performance configs turn it on wherever tensor
    parallelism is (userbuffers over Transformer Engine: ``scripts/performance/configs/llama3/llama3_llm_pretrain.py``
    and ``llama31`` at 556c8e1c9, 2025-12; ``src/megatron/bridge/perf_recipes/llama/*/llama3.py`` and
    ``llama31.py`` at 067f987df)."""
    par = case.get("parallelism") or {}
    if par.get("tp_overlap") is not None:
        return bool(par["tp_overlap"])
    if "--tp-comm-overlap" in str(par.get("comm_overlap") or ""):
        return True
    return source == "mbridge" and "llama" in str((case.get("model") or {}).get("name", "")).lower()


def _param_gather_overlap(case: dict, source: str, dp: int) -> bool:
    """Whether the case's stack hides ZeRO-1's all-gather of the updated parameters in the next step's forward
    (``param_gather_overlap``): Megatron's ``--overlap-param-gather`` among its ``comm_overlap`` flags, NeMo's
    2024 FP8 table, whose release configs run Apex's ``distributed_fused_adam`` with ``overlap_param_sync: true``
    (NVIDIA/NeMo-Framework-Launcher ``launcher_scripts/conf/training`` at 6a76374e, 2024-07-31), and
    Megatron-Bridge's runs (:func:`_distributed_optimizer`), whose communication-overlap config turns on
    ``overlap_param_gather`` wherever data parallelism is (``_get_optimizer_overlap_cfgs`` in
    ``src/megatron/bridge/training/comm_overlap.py`` at 067f987df)."""
    if "--overlap-param-gather" in str((case.get("parallelism") or {}).get("comm_overlap") or ""):
        return True
    return source == "nemo2407" or _distributed_optimizer(case, source, dp)


def _distributed_optimizer(case: dict, source: str, dp: int) -> bool:
    """Megatron-Bridge's runs without Megatron-FSDP shard the optimizer over their ``dp`` data-parallel ranks
    (ZeRO-1): its pre-training recipes set ``use_distributed_optimizer=True`` (``src/megatron/bridge/recipes/common.py``
    at 067f987df), which its performance recipes keep."""
    return source == "mbridge" and _zero(case.get("parallelism") or {}) == 0 and dp > 1


# How each source's stack cuts a pipeline's layers (``pipeline_split``; ftplan.memory.pipeline): nanotron, which
# the Ultra-Scale Playbook ran, balances its stages by each block's cost, the head's counted beside the layers'
# (``get_block_compute_costs`` in src/nanotron/models/llama.py, the cumulative-cost cut in models/base.py at
# 0e0a27ea): ``weighted`` is the nearer of the two cuts ftplan knows (nanotron's moves the head's whole cost, up to
# four layers of a 1B model's, off the last stage; weighted moves one). Megatron-Bridge's recipes by model, at
# 067f987df: Llama 3.1 405B and Qwen3-235B-A22B turn on ``account_for_embedding_in_pipeline_split`` and
# ``account_for_loss_in_pipeline_split`` (src/megatron/bridge/recipes/llama/h100/llama3.py
# ``llama31_405b_pretrain_256gpu_h100_bf16_config``, recipes/qwen/h100/qwen3_moe.py
# ``qwen3_235b_a22b_pretrain_256gpu_h100_bf16_config``), DeepSeek-V3 and Llama 3 70B in FP8 on H100 state layouts
# that give the first and last chunk fewer layers (perf_recipes/deepseek/*/deepseek_v3.py, "Et|(tt|)*30mL";
# perf_recipes/llama/h100/llama3.py, "Et*2|(t*2|)*34,t*3|(t*2|)*3,tL"); the others keep GPTModelProvider's
# default, both flags off (models/gpt_provider.py; gpt-oss's recipe states it: recipes/gpt_oss/h100/gpt_oss.py),
# an even cut, as NeMo's 2024 Megatron-Core and NeMo Automodel (``generate_hf_model_fqn_per_model_part`` in
# nemo_automodel/components/distributed/pipelining/functional.py at its mirror's HEAD: the layers alone) do.
WEIGHTED_SPLIT_SOURCES = {"usp"}
WEIGHTED_SPLIT_MODELS = {"mbridge": ("405b", "235b", "deepseek", "h100-fp8cs-llama3_70b")}


def _pipeline_split(case: dict, source: str) -> PipelineSplit:
    """How the case's stack cuts its pipeline's layers (:data:`WEIGHTED_SPLIT_SOURCES`)."""
    name = (str((case.get("model") or {}).get("name", "")) + " " + case["id"]).lower()
    models = WEIGHTED_SPLIT_MODELS.get(source, ())
    weighted = source in WEIGHTED_SPLIT_SOURCES or any(m in name for m in models)
    return PipelineSplit.WEIGHTED if weighted else PipelineSplit.EVEN


def _attention_kernel(case: dict) -> AttentionKernel:
    """cuDNN's where the stack runs Transformer Engine's attention; FlexAttention where the case's kernels name it
    (NeMo Automodel's ``FlexAttn``); else FlashAttention-2 (or SDPA's flash backend)."""
    te = case["id"].split("-", 1)[0] in TE_ATTENTION_SOURCES or "TE DotProductAttention" in str(case.get("attention"))
    if te:
        return AttentionKernel.CUDNN
    return AttentionKernel.FLEX if "FlexAttn" in _kernels(case) else AttentionKernel.FLASH2


def _kernels(case: dict) -> str:
    """The kernels a case's framework states (NeMo Automodel's rows: ``TE + DeepEP + FlexAttn``)."""
    return str((case.get("framework") or {}).get("kernels") or "")


# The source the per-operation dispatch time is fitted on (Hugging Face Trainer + PEFT, eager): its constant
# and the catalog's efficiencies are fitted together (``--fit``), so these cases are part of the fitted part.
DISPATCH_SOURCES = {"qwen1"}
# Sources whose eager stack runs each norm and activation as one PyTorch kernel (reading its input and writing its
# output once), not as the chain of elementwise operations Transformers' Python modules dispatch: llm-foundry's
# MPT (``norm_type: low_precision_layernorm`` by default, ``LPLayerNorm`` in llmfoundry/models/layers/norm.py: one
# ``F.layer_norm`` on the 16-bit input; ``MPTMLP``'s ``nn.GELU``; learned positions or ALiBi, no rotary). Their
# memory-bound bytes are the single-kernel ones ``ftplan.timing.traffic`` derives for fused stacks, their launches
# eager. (GPT-NeoX, whose architecture stands in for MPT's widths, brings rotary embeddings MPT does not run: a
# sixth of the derived bytes: 0.6% of these runs' step time at the median, 1.2% at most.) And nanotron's Llama, which
# the Ultra-Scale Playbook ran (src/nanotron/models/llama.py at 0e0a27ea, its benchmarks' date): ``TritonRMSNorm``,
# one Triton kernel a norm; flash-attn's rotary kernel; bf16 weights, so no autocast casts; its SwiGLU, though, is
# two kernels (SiLU, then the product: 2f more bytes a token forward and about 4f backward than the derived ones,
# 0.7-2.3% of these runs' step time, not added).
SINGLE_KERNEL_SOURCES = {"foundry", "usp"}
# Sources whose QLoRA runs compute in fp32 beside the 4-bit layers: universal-llm-trainer loads a 4-bit model
# with dtype float32 (``dtype`` is float32 unless the configured ``bit`` names a dtype: src/univlt/models/llama3.py;
# ``torch_dtype`` float32 in src/models/llama3.py before it), so embeddings, norms and lm_head are fp32 and with
# them the residual stream, attention and the loss, while only the 4-bit layers compute in bf16. Its table's model
# memory agrees: 8.0 for Llama 3.1 8B QLoRA, as 4-bit layers (3.6 GB) beside fp32 embeddings and head (4.2 GB),
# where bf16 ones would make 5.7 GB (docs/gpu_test.md, 9efd14b). No job states such a precision mix.
FP32_QLORA_SOURCES = {"ult"}
# Sources whose LoRA adapters are fp32 over a bf16 model without autocast (precision ``bf16-fp32-adapters``):
# universal-llm-trainer loads the model in bf16 (``bit: bfloat16``, ``amp_training: False`` in its configs) and
# wraps it with PEFT's ``get_peft_model``, whose ``autocast_adapter_dtype`` (True by default since PEFT 0.12; its
# docker/requirements.txt pins peft 0.17.0) keeps the adapters fp32, so PEFT casts each adapter's input up and its
# output back (ljm565/universal-llm-trainer src/utils/peft_utils.py at 9efd14b).
FP32_ADAPTER_SOURCES = {"ult"}
# Sources whose LoRA adapters are in the model's 16-bit dtype (timed as ``bf16-pure``: under autocast over bf16
# weights and adapters no operation casts): PEFT before 0.12 moved new adapters to the base weight's dtype
# (``LoraLayer.update_layer`` in peft v0.6.2, src/peft/tuners/lora/layer.py) and 0.12.0 (2024-07-24) first kept
# them fp32 (``autocast_adapter_dtype``); Qwen's README table, over a bf16 model (finetune.py), last changed on
# 2024-06-20 (QwenLM/Qwen 712d922e).
MODEL_DTYPE_ADAPTER_SOURCES = {"qwen1"}
# Sources whose batches reach the model with a padding mask: universal-llm-trainer pads every sample to
# ``max_length`` and hands the model its attention mask (src/data_collection/qa_dataset.py ``_pad`` and
# ``__getitem__`` at 9efd14b); its GPU test (``--gpu_test``, the published table's runs) replaces the tokens and
# labels with random ones but keeps that mask (src/trainer/trainer.py), so SDPA runs the masked, every-pair kernel
# over the full 8,192 tokens.
PADDED_MASK_SOURCES = {"ult"}


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


def _zero(par: dict) -> int:
    """The case's ZeRO stage: as stated (``zero_stage``), else 3 where it shards with FSDP over more than one
    rank (``fsdp``: true or a degree; torchtitan's FSDP2 and Megatron-FSDP shard parameters, gradients and
    optimizer states alike), else read from the sharding's description."""
    stage = _int(par.get("zero_stage"))
    if stage is not None:
        return stage
    if par.get("fsdp") is True or (_int(par.get("fsdp")) or 0) > 1:
        return 3
    s = str(par.get("sharding") or "").lower()
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
    m = dict(case.get("model") or {})
    needed = ("hidden", "layers", "heads", "vocab")
    gpt = str(m.get("name") or "").upper().startswith("GPT")
    if gpt and not m.get("vocab") and case["id"].split("-", 1)[0] in NEMO_SOURCES:
        m["vocab"] = NEMO_GPT3_VOCAB
    if all(m.get(k) for k in needed) and (m.get("ffn") or gpt):
        # GPT-3-style models without a stated MLP width: 4 × the model's (Brown et al. 2020, §2.1)
        h = int(m["hidden"])
        ffn = int(m.get("ffn") or 4 * h)
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
        stand_in = name.strip().lower()
        if stand_in in SOURCE_CONFIGS:
            arch = architecture_from_hf(SOURCE_CONFIGS[stand_in], case["id"])
            return replace(arch, **SOURCE_LINEARS.get(stand_in, {}))
    raise OutOfScope("model not in the catalog")


def _lora(case: dict) -> LoraSetup:
    """The case's adapters: rank, targets and dropout as it states them (PEFT's default dropout, 0, where not)."""
    lora = case.get("lora") or {}
    targets = lora.get("target_modules")
    names = tuple(targets) if isinstance(targets, list) else ()
    known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    dropout = lora.get("dropout")
    return LoraSetup(
        rank=int(lora.get("rank") or 16),
        target_modules=names if names and set(names) <= known else ("all-linear",),
        dropout=float(dropout) if isinstance(dropout, (int, float)) else 0.0,
    )


def translate(case: dict, catalog: Catalog) -> dict:
    """The case as the time model's inputs; raises :class:`OutOfScope` with the reason."""
    source = case["id"].split("-", 1)[0]
    hw, par = case.get("hardware") or {}, case.get("parallelism") or {}
    gpu = _gpu_id(str(hw.get("gpu", "")), catalog)
    prec = str(case.get("precision", "")).lower()
    method = str(case.get("method", "")).split(" ")[0]
    fp8 = "fp8" in prec
    kind = {"pretrain": "pretrain", "full_ft": "full", "full": "full", "lora": "LoRA", "qlora": "QLoRA"}.get(method)
    if kind is None:
        raise OutOfScope(f"method {method!r}")
    if ("4-bit" in prec or "nf4" in prec) and "qlora:" not in prec:  # ("QLoRA: NF4 …" names another row's)
        kind = "QLoRA"
    if kind == "QLoRA" and source in FP32_QLORA_SOURCES:
        raise OutOfScope("QLoRA computing in fp32 beside its 4-bit layers")
    if fp8 and kind not in ("pretrain", "full"):  # FP8 is modelled for full training
        raise OutOfScope("FP8 with frozen weights")
    # (offload stated in its own field, or within the sharding's description: "FSDP with CPU offload")
    if str(par.get("offload") or "none").strip().lower() != "none" or "offload" in str(par.get("sharding")).lower():
        raise OutOfScope("offload")
    if "gptq" in str(case.get("quantization") or "").lower():  # ftplan's QLoRA is bitsandbytes' NF4
        raise OutOfScope("GPTQ-quantized weights")
    seq = _int(case.get("seq_len")) or _int((case.get("model") or {}).get("seq_len"))
    # (a row packed with documents that attend within themselves costs attention over their lengths, which a row's
    # length alone does not give: NeMo's packed SFT)
    if seq is None or "attention within" in str(case.get("packing") or ""):
        raise OutOfScope("variable-length batches")
    count = int(hw.get("count") or 1)
    tp, pp, cp = int(par.get("tp") or 1), int(par.get("pp") or 1), int(par.get("cp") or 1)
    micro_batch = _int(case.get("micro_batch"))
    if micro_batch is None:
        if pp > 1:  # (the pipeline's bubble depends on it)
            raise OutOfScope("micro-batch not stated")
        micro_batch = 1  # without a pipeline it only sets how much compute hides the gradient reduction
    arch = _architecture(case, catalog)
    ep = int(par.get("ep") or 1) if arch.is_moe else 1
    if (count // (tp * pp)) % ep:  # (Megatron may carve experts out of tp × dp ranks; ftplan's EP shares dp × cp)
        raise OutOfScope("expert parallelism across tensor-parallel ranks")
    measured = _tokens_per_s(case, arch, seq, count)
    eager = source in EAGER_ATTENTION_SOURCES
    if eager:
        arch = replace(arch, attention_dropout=MEGATRON_ATTENTION_DROPOUT)
    dp = count // (tp * pp * cp)
    # Megatron's virtual pipeline size (vp): chunks a rank holds under the interleaved schedule
    virtual = int(par.get("vp") or 1) if pp > 1 else 1
    frozen = kind in ("LoRA", "QLoRA")
    precision = Precision.FP8 if fp8 else Precision.FP16_MIXED if "fp16" in prec else _sixteen_bit(prec)
    if kind == "LoRA" and source in FP32_ADAPTER_SOURCES:
        precision = Precision.BF16_FP32_ADAPTERS
    elif kind == "LoRA" and source in MODEL_DTYPE_ADAPTER_SOURCES and precision is Precision.BF16_MIXED:
        precision = Precision.BF16_PURE
    training = Training(
        method={"LoRA": Method.LORA, "QLoRA": Method.QLORA}.get(kind, Method.FULL),
        precision=precision,
        attention_mask=AttentionMask.PADDED if source in PADDED_MASK_SOURCES else AttentionMask.NONE,
        seq_len=seq, lora=_lora(case) if frozen else None,
        fp8=Fp8Setup(all_gather="all-gather" in prec, weight_cache=source in FP8_WEIGHT_CACHE_SOURCES) if fp8 else None,
        kernels=Kernels.FUSED if source in FUSED_SOURCES or "compile" in prec else Kernels.EAGER,
        attention_kernel=_attention_kernel(case), tp_overlap=tp > 1 and _tp_overlap(case, source),
        param_gather_overlap=_param_gather_overlap(case, source, dp),
        expert_dispatch=ExpertDispatch.DEEPEP if "DeepEP" in _kernels(case) else ExpertDispatch.ALLTOALL,
        attention=Attention.EAGER if eager else Attention.SDPA, dropout=True if eager else None,
        pipeline_split=_pipeline_split(case, source),
    )  # fmt: skip
    if "force-balanced" in str(case.get("routing")):  # (tokens spread evenly: no rank waits for an overloaded one)
        training = replace(training, capacity_factor=1.0)
    nodes = int(hw.get("nodes") or math.ceil(count / catalog.gpus[gpu].max_gpus_per_node))
    flops = tm.job_flops(arch, training)
    if source in SINGLE_KERNEL_SOURCES:
        fused = tm.job_flops(arch, replace(training, kernels=Kernels.FUSED))
        flops = replace(flops, traffic_forward=fused.traffic_forward, traffic_backward=fused.traffic_backward,
                        traffic_head=fused.traffic_head)  # fmt: skip
    recompute = _recompute(str(case.get("activation_checkpointing")))
    if _above_peak(measured, flops, recompute, catalog.gpus[gpu].tflops.model_dump(), training.precision):
        raise OutOfScope("faster than the GPU's peak as configured")
    return {
        "id": case["id"], "arch": arch, "training": training, "flops": flops, "gpu": gpu, "dp": dp, "tp": tp,
        "pp": pp, "cp": cp, "ep": ep,
        "virtual": virtual, "zero": 1 if _distributed_optimizer(case, source, dp) else _zero(par),
        "recompute": recompute,
        "micro_batch": micro_batch, "grad_accum": _accum(case, source, dp, micro_batch),
        "measured": float(measured), "source": source, "fp8": fp8, "kind": kind,
        "nodes": nodes, "busbw": MEASURED_BUSBW.get(source, {}).get(nodes), "inferred": _inferred(case, dp),
    }  # fmt: skip


def _above_peak(
    measured: float, flops: tm.JobFlops, recompute: int, tflops: dict[str, float | None], precision: Precision
) -> bool:  # fmt: skip
    """Whether the published tokens/s would run the job's hardware FLOPs a token (its matmuls and attention
    core, recomputation as configured) faster than the GPU's dense peak (the FP8 peak for an FP8 job, all of
    its FLOPs counted at it): a figure that counts tokens otherwise than the job as stated does."""
    matmuls, attention = flops.hardware(recompute)
    peak = tflops.get("fp8") if precision is Precision.FP8 else tm.peak_tflops(tflops, precision)
    return measured * float(matmuls + attention) > float(peak or 0.0) * 1e12 > 0


def _sixteen_bit(prec: str) -> Precision:
    """bf16 weights without fp32 masters where the source says the model itself is bf16 (a ``torch.bfloat16``
    model trained as such, Lightning's ``bf16-true``), else mixed precision."""
    return Precision.BF16_PURE if "torch.bfloat16" in prec or "bf16-true" in prec else Precision.BF16_MIXED


def _inferred(case: dict, dp: int) -> bool:
    """Whether part of the case's configuration is inferred rather than published, or contradicts itself (see
    module docstring); ``dp`` its data-parallel degree."""
    source = case.get("source") or {}
    micro_batch, accum, gbs = (_int(case.get(k)) for k in ("micro_batch", "grad_accum", "global_batch_seqs"))
    return (
        case.get("grade") == "B"
        or bool(case.get("inferred"))  # (the validation row's own list of what it inferred)
        or case.get("confidence") in ("medium", "low")
        or "recalled" in str(source.get("verification", "") if isinstance(source, dict) else "")
        or micro_batch is None
        or not (accum or gbs)
        or bool(micro_batch and accum and gbs and gbs != dp * micro_batch * accum)
    )


# Stacks on Megatron-LM or Megatron-Core, which take the global and micro-batch sizes and derive the micro-steps a step
# from them (``ConstantNumMicroBatchesCalculator``, megatron/core/num_microbatches_calculator.py: the global batch over
# the micro-batch times the data-parallel size, which leaves tensor, pipeline and context parallelism out): their
# stated global batch sets the accumulation, whatever a table's own column says: two rows of Megatron-Bridge's 25.11
# table with a pipeline state another (gpt-oss-120b on H100: 2 where 512 / (4 × 16) is 8; Qwen3-235B-A22B on GB300:
# 32 where 8,192 / (2 × 64) is 64), which would leave their 4 stages idle 150% and 0.8% of a step, not 38% and 0.4%.
GLOBAL_BATCH_SOURCES = {"mbridge", "nemo", "nemo2407", "mcore", "narayanan21", "korthikanti22"}


def _accum(case: dict, source: str, dp: int, micro_batch: int) -> int:
    """Micro-steps a step: as stated, else the global batch over dp micro-batches (1 without either); the global
    batch first where the ``source``'s stack derives the micro-steps from it (``GLOBAL_BATCH_SOURCES``)."""
    gbs = case.get("global_batch_seqs")
    if case.get("grad_accum") and not (gbs and source in GLOBAL_BATCH_SOURCES):
        return int(case["grad_accum"])
    return max(1, int(gbs) // (dp * micro_batch)) if gbs else 1


# Sources that publish TFLOP/s per GPU (or MFU) instead of tokens/s, and the FLOPs a token their formula
# counts (``flops_convention`` of each case), from layers n (l in the papers), width h, sequence s, vocabulary V:
# - Narayanan et al. 2021 (arXiv 2104.04473, eq. 3): 96·B·s·l·h²·(1 + s/6h + V/16lh) an iteration, full
#   recomputation included;
# - Korthikanti et al. 2022 (arXiv 2205.05198, §6.3): 72·B·s·l·h²·(1 + s/6h + V/12lh), model FLOPs;
# - Megatron-Core's ``num_floating_point_operations`` (r0.8 README table): 6 FLOPs a matmul weight a token
#   (lm_head included) plus non-causal attention 12·l·s·h;
# - NeMo's ``llama2`` formula (nemo/utils/flops_formulas.py), which its performance tables use:
#   l·h²·(12 + 12·g/a + 18·f/h + 12·s/h + 6·V/(l·h)) a token, g query groups of a heads, MLP width f: the
#   same count as Megatron-Core's for a gated MLP.
FLOP_CONVENTIONS = {
    "nemo": lambda n, h, s, v, arch: (
        n * h * h * (12 + 12 * arch.kv_heads / arch.heads + 18 * arch.ffn / h + 12 * s / h + 6 * v / (n * h))
    ),
    "narayanan21": lambda n, h, s, v, arch: 96 * n * h * h * (1 + s / (6 * h) + v / (16 * n * h)),
    "korthikanti22": lambda n, h, s, v, arch: 72 * n * h * h * (1 + s / (6 * h) + v / (12 * n * h)),
    "mcore": lambda n, h, s, v, arch: 6 * (arch.matrix_params + v * h) + 12 * n * s * arch.q_dim,
}


def _tokens_per_s(case: dict, arch: Architecture, seq: int, count: int) -> float:
    """Tokens/s per GPU: as published, else the source's TFLOP/s per GPU over the FLOPs a token its own
    formula counts (FLOP_CONVENTIONS). torchtune's README states tokens/s without saying per GPU; its
    multi-GPU rows are only possible as totals (their notes), so they are divided by the GPUs."""
    meas, derived = case.get("measured") or {}, case.get("derived") or {}
    value = meas.get("tokens_per_s_per_gpu") or derived.get("tokens_per_s_per_gpu")
    if value:
        return float(value)
    if meas.get("tokens_per_s_reported"):
        return float(meas["tokens_per_s_reported"]) / count
    source = case["id"].split("-", 1)[0]
    # (NeMo's long-sequence table: the model TFLOP/s of the layout the case lists, context parallelism included)
    tflops = meas.get("tflops_per_gpu") or meas.get("model_tflops_per_gpu_with_cp")
    peak = (case.get("flops_convention") or {}).get("peak_tflops")
    if tflops is None and meas.get("mfu_pct") and peak:
        tflops = float(meas["mfu_pct"]) / 100 * float(peak)
    if tflops is None or source not in FLOP_CONVENTIONS:
        raise OutOfScope("no tokens/s per GPU")
    per_token = FLOP_CONVENTIONS[source](arch.layers, arch.hidden, seq, arch.vocab, arch)
    return float(tflops) * 1e12 / per_token


def _hardware(c: dict, catalog: Catalog, efficiencies: tuple[float, float] | None = None) -> tm.Hardware:
    """The case's hardware; ``efficiencies`` (matmuls, attention) in place of the catalog's."""
    gpu = catalog.gpus[c["gpu"]]
    network = NETWORK.get(c["gpu"], 1600.0) if c["nodes"] > 1 else None
    pool = Pool(c["gpu"], gpu, gpus_per_node=gpu.max_gpus_per_node, max_nodes=max(c["nodes"], 1), network_gbps=network,
                usd_per_node_hour=None, allreduce_busbw_gbs=c["busbw"])  # fmt: skip
    hw = hardware(pool, c["training"].precision)
    if efficiencies is not None:
        hw = replace(hw, efficiency=efficiencies[0], attention_efficiency=efficiencies[1])
    return hw


def _times(c: dict, catalog: Catalog, efficiencies: tuple[float, float] | None = None) -> tm.StepTimes:
    hw = _hardware(c, catalog, efficiencies)
    return tm.step_times(
        c["flops"], c["arch"], c["training"], hw, np.array([c["dp"]]), np.array([c["tp"]]), np.array([c["zero"]]),
        np.array([0]), np.array([c["recompute"]]), np.array([c["micro_batch"]]), np.array([c["grad_accum"]]),
        np.array([c["pp"]]), np.array([c["virtual"]]), cp=np.array([c["cp"]]), ep=np.array([c["ep"]]),
    )  # fmt: skip


def _tokens_per_gpu(c: dict) -> float:
    """Tokens a GPU's step trains on."""
    return c["micro_batch"] * c["grad_accum"] * c["training"].seq_len / (c["tp"] * c["pp"] * c["cp"])


def predict(c: dict, catalog: Catalog) -> float:
    """The time model's tokens/s per GPU."""
    return float(_tokens_per_gpu(c) / _times(c, catalog).total[0])


def _baseline_rate(c: dict, catalog: Catalog) -> float:
    """The baseline's tokens/s per GPU at the catalog's efficiency."""
    hw = _hardware(c, catalog)
    f = c["flops"]
    non_causal = 2 * f.attention  # (the model counts the causal half)
    per_token = f.linear + non_causal + (f.forward + f.attention / 3 if c["recompute"] == 2 else 0.0)
    rate = hw.peak_tflops * 1e12 * hw.efficiency
    if c["fp8"]:
        rate = hw.fp8_tflops * 1e12 * hw.efficiency
    return rate / per_token


def baseline_scales(cases: list[dict], catalog: Catalog) -> dict[str, float]:
    """Per GPU family, the factor on the catalog's efficiency that fits the baseline to the fitted llm-foundry
    runs by least squares on relative time (``t_baseline / t = k / x``: ``x = Σk² / Σk`` over ``k = measured /
    rate at the catalog's efficiency``)."""
    scales = {}
    for family, gpus in FAMILIES.items():
        ks = [c["measured"] / _baseline_rate(c, catalog) for c in _fitted_runs(cases, gpus)]
        scales[family] = sum(k * k for k in ks) / sum(ks)
    return scales


def baseline(c: dict, catalog: Catalog, scales: dict[str, float]) -> float:
    """The llm-analysis baseline's tokens/s per GPU (see module docstring)."""
    family = next((f for f, gpus in FAMILIES.items() if c["gpu"] in gpus), "H100")
    return _baseline_rate(c, catalog) * scales[family]


# GPU families whose efficiencies are fitted (one compute die each: the A100s differ in memory only, and
# the H200 has the H100's compute)
FAMILIES = {"A100": ("a100-sxm-80gb", "a100-sxm-40gb"), "H100": ("h100-sxm-80gb",)}
FIT_ROUNDS = 20  # alternations of the two fits; they settle within 1e-6 relative in under ten


def _gemm_fixed(c: dict, hw: tm.Hardware) -> float:
    """Seconds a step of a run without pipeline stages spends on its weight GEMMs beyond their FLOPs
    (``timing.model.gemm_overhead``), which the efficiency fit books apart."""
    s, _ = tm.sequence_lengths(c["training"], np.array([c["micro_batch"]]))
    tokens = c["micro_batch"] * s / c["cp"]
    return (
        float(tm.gemm_overhead(c["flops"], hw, tokens, np.array([c["tp"]]), np.array([c["recompute"]]))[0])
        * c["grad_accum"]
    )


def _fit_pair(chosen: list[dict], catalog: Catalog, per_op: float) -> tuple[float, float, np.ndarray]:
    """One GPU family's matmul and attention efficiencies (fractions of peak over hardware FLOPs) by least
    squares on the relative time a token, ``t − dispatch − other ≈ matmul FLOPs / (peak · e_matmul) + attention
    FLOPs / (peak · e_attention)``, the dispatch time at ``per_op`` seconds an operation and ``other`` the
    memory-bound time the model books apart (the optimizer step); with the |relative error| of each case's
    whole time."""
    a, t, d = [], [], []
    for c in chosen:
        matmuls, attention = c["flops"].hardware(c["recompute"])
        hw = _hardware(c, catalog)
        peak = hw.peak_tflops * 1e12
        st = _times(c, catalog)
        ops = st.dispatch[0] / dispatch.SECONDS_PER_OP
        a.append([float(matmuls) / peak, float(attention) / peak])
        t.append(1 / c["measured"])
        d.append((ops * per_op + st.other[0] + _gemm_fixed(c, hw)) / _tokens_per_gpu(c))
    a_, t_, d_ = np.array(a), np.array(t), np.array(d)
    (x, y), *_ = np.linalg.lstsq(a_ / t_[:, None], 1 - d_ / t_, rcond=None)
    return 1 / x, 1 / y, np.abs(t_ / (a_ @ [x, y] + d_) - 1)


def _fit_per_op(chosen: list[dict], catalog: Catalog, effs: dict[str, tuple[float, float]]) -> float:
    """Seconds an operation by least squares on relative step time, ``t ≈ t_model without dispatch + ops · x``."""
    rows, rhs = [], []
    for c in chosen:
        family = next(f for f, gpus in FAMILIES.items() if c["gpu"] in gpus)
        st = _times(c, catalog, effs[family])
        t = _tokens_per_gpu(c) / c["measured"]
        rows.append(st.dispatch[0] / dispatch.SECONDS_PER_OP / t)
        rhs.append(1 - (st.total[0] - st.dispatch[0]) / t)
    r, b = np.array(rows), np.array(rhs)
    return float(r @ b / (r @ r))


def _fitted_runs(cases: list[dict], gpus: tuple[str, ...]) -> list[dict]:
    """llm-foundry's single-node 16-bit runs on ``gpus``: what the efficiencies are fitted on."""
    return [c for c in cases if c["source"] == "foundry" and c["gpu"] in gpus and not c["fp8"]
            and c["nodes"] == 1 and c["tp"] * c["pp"] == 1]  # fmt: skip


def fit_efficiencies(cases: list[dict], catalog: Catalog) -> tuple[dict[str, tuple[float, float, np.ndarray]], float]:
    """Each GPU family's efficiencies, fitted on llm-foundry's single-node 16-bit runs, and the seconds an
    eager operation dispatches, fitted on Qwen's fine-tuning runs: alternately, each with the other's last
    value, until both settle. Returns the pairs with the fit's |relative error| on each case, and the seconds."""
    chosen = {family: _fitted_runs(cases, gpus) for family, gpus in FAMILIES.items()}
    tuned = [c for c in cases if c["source"] in DISPATCH_SOURCES]
    per_op = dispatch.SECONDS_PER_OP
    for _ in range(FIT_ROUNDS):
        pairs = {f: _fit_pair(cs, catalog, per_op) for f, cs in chosen.items()}
        per_op = _fit_per_op(tuned, catalog, {f: (e, a) for f, (e, a, _) in pairs.items()})
    return pairs, per_op


def fit(cases: list[dict], catalog: Catalog) -> None:
    """Print :func:`fit_efficiencies`."""
    pairs, per_op = fit_efficiencies(cases, catalog)
    rows = [[family, str(len(errs)), f"{e:.3f}", f"{a:.3f}", f"{np.median(errs):.1%}", f"{_p90(list(errs)):.1%}"]
            for family, (e, a, errs) in pairs.items()]  # fmt: skip
    print(render_table(["GPU", "cases", "matmul efficiency", "attention efficiency", "median |err|", "p90 |err|"],
                       rows, right={1, 2, 3, 4, 5}))  # fmt: skip
    print(f"\nseconds an eager operation dispatches: {per_op * 1e6:.1f} µs (fitted on {', '.join(DISPATCH_SOURCES)})")


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


def _fitted(case: dict) -> bool:
    """Whether the case belongs to the part a constant was fitted on (``FITTED_SOURCES``)."""
    return case["source"] in FITTED_SOURCES


def summary_table(results: list[tuple[dict, float, float]]) -> str:
    """Median and p90 |error| of the model and of the baseline by group (part, source, GPU, method, sequence and
    node buckets, precision, pipeline, context parallelism, configuration, MoE), over ``results`` (case, |model
    error|, |baseline error|)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for c, e, b in results:
        for key in (
            f"part: {'fitted' if _fitted(c) else 'held out'}", f"source: {c['source']}", f"gpu: {c['gpu']}",
            f"method: {c['kind']}", f"seq: {bucket(c['training'].seq_len, SEQ_BUCKETS)}",
            f"nodes: {bucket(c['nodes'], NODE_BUCKETS)}", "precision: FP8" if c["fp8"] else "precision: 16-bit",
            "pipeline: yes" if c["pp"] > 1 else "pipeline: no",
            "context parallelism: yes" if c["cp"] > 1 else "context parallelism: no",
            "configuration: inferred" if c["inferred"] else "configuration: as published",
            "MoE: yes" if c["arch"].is_moe else "MoE: no",
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
    return render_table(["group", "cases", "model median", "model p90", "baseline median", "baseline p90",
                         "model better"], summary, right={1, 2, 3, 4, 5})  # fmt: skip


def main(argv: list[str]) -> None:
    catalog = load_catalog()
    cases, skipped = load_cases(catalog)
    if "--fit" in argv:
        fit(cases, catalog)
        return
    rows, results = [], []
    scales = baseline_scales(cases, catalog)
    for c in cases:
        pred, base = predict(c, catalog), baseline(c, catalog, scales)
        err, berr = (pred - c["measured"]) / c["measured"], (base - c["measured"]) / c["measured"]
        results.append((c, abs(err), abs(berr)))
        gpus = str(c["dp"] * c["tp"] * c["pp"] * c["cp"])
        rows.append([c["id"], c["kind"], c["gpu"], gpus, f"{c['measured']:,.0f}", f"{pred:,.0f}", f"{err:+.1%}",
                     f"{berr:+.1%}"])  # fmt: skip
    if "--cases" in argv:
        print(render_table(["case", "method", "gpu", "GPUs", "measured tok/s/GPU", "model", "error", "baseline"],
                           rows, right={3, 4, 5, 6, 7}))  # fmt: skip
        print()
    print(summary_table(results))
    held_out = [r for r in results if not _fitted(r[0])]
    print(f"\nheld out only ({len(held_out)} cases, every source no constant was fitted on):")
    print(summary_table(held_out))
    total = len(cases) + sum(skipped.values())
    print(f"\nin scope: {len(cases)} of {total} cases ({len(cases) / total:.0%}); out of scope:")
    for why, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        print(f"  {n:3d}  {why}")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # (piped into head: stop quietly, as a shell tool does)
    main(sys.argv[1:])

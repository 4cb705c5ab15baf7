"""Hand-computed arithmetic for each term of the memory model."""

from __future__ import annotations

import pytest

from ftplan.arch import architecture_from_hf
from ftplan.memory import (
    Layout,
    LoraSetup,
    Loss,
    Method,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Training,
    ZeroStage,
    estimate_memory,
)
from ftplan.memory.activations import Dtypes, Grads, layer_bytes_per_token, loss_bytes_per_token
from ftplan.memory.params import nf4_bits_per_weight, split_params
from ftplan.memory.setup import Attention

TINY = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip


def test_llama_layer_bf16_sdpa_matches_saved_tensors():
    # Per token, h=256, q=256, kv=64, a=8, f=704, bf16, SDPA:
    #   2 RMSNorms × (4h fp32 upcast + 4 rsqrt + 2h normalised + 2h output) = 2 × 2052
    #   attention: q 2·256 + k 2·64 + v 2·64 + output 2·256 + log-sum-exp 4·8 = 1312
    #   MLP: gate, act, up, product = 4 × 2·704 = 5632
    # 11048 bytes/token is also what saved_tensors_hooks counted for this model
    # (transformers 5.24, torch 2.13 CPU: 2,828,288 bytes per layer for 256 tokens).
    arch = architecture_from_hf(TINY)
    got = layer_bytes_per_token(arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert got == 2 * 2052 + 1312 + 5632 == 11048


def test_lora_layer_saves_only_what_trainable_weights_need():
    # Same model, LoRA r=16 on q,k,v,o with fp32 adapters over a bf16 base (PEFT under autocast):
    #   norm before attention: 4h upcast + 4 rsqrt (frozen weight: no normalised tensor);
    #     q, k, v adapters each cast their input (3 × 2h) and keep their A output (3 × 2·16)
    #   attention core as full fine-tuning 1312; o adapter: own input copy 2·256 + A output 2·16
    #   norm before the MLP: 4h + 4 (gate/up are frozen: their input is not kept)
    #   MLP: silu input, silu output and up output (the frozen down projection keeps no product)
    # = 1028 + 1632 + 1312 + 544 + 1028 + 4224 = 9768; the first layer, whose input needs no
    # gradient, keeps no norm upcast: 8740. Both are what `ftplan measure` counted.
    arch = architecture_from_hf(TINY)
    g = Grads(full=False, targets=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}), rank=16, adapter_cast=True)
    args = (arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(*args, g) == 1028 + 1632 + 1312 + 544 + 1028 + 4224 == 9768
    assert layer_bytes_per_token(*args, g.first_layer()) == 9768 - 1028
    # bf16 adapters (bf16-pure) share one input copy between q, k and v and read o's input in place
    shared = Grads(full=False, targets=g.targets, rank=16, adapter_cast=False)
    assert layer_bytes_per_token(*args, shared) == 9768 - 2 * 512 - 512


def test_llama_layer_fp32_and_eager():
    arch = architecture_from_hf(TINY)
    # fp32: norms 12h+4 each; attention 4·(256+64+64+256)+32; MLP 4·4·704
    fp32 = layer_bytes_per_token(arch, "main", Dtypes(c=4, r=4), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert fp32 == 2 * 3076 + 2592 + 11264
    # eager bf16, s=128: q, k, v expanded 3·2·256, fp32 softmax 4·8·128, bf16 probs 2·8·128, output 2·256
    eager = layer_bytes_per_token(arch, "main", Dtypes(c=2, r=2), Attention.EAGER, 128, 128, False, Recompute.NONE)
    assert eager == 2 * 2052 + (1536 + 4096 + 2048 + 512) + 5632
    # selective recomputation drops the probabilities: back to the SDPA count
    sel = layer_bytes_per_token(arch, "main", Dtypes(c=2, r=2), Attention.EAGER, 128, 128, False, Recompute.SELECTIVE)
    assert sel == 11048


def test_autocast_casts_inputs_per_consumer():
    arch = architecture_from_hf(TINY)
    # fp32 stream under autocast: attention norm 4h + 4 + 4h + 3 casts of 2h; MLP norm with 2 casts
    got = layer_bytes_per_token(arch, "main", Dtypes(c=2, r=4), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert got == (8 * 256 + 4 + 3 * 512) + 1312 + (8 * 256 + 4 + 2 * 512) + 5632


def test_loss_terms():
    arch = architecture_from_hf(TINY)
    # standard, upcast to fp32: max(2V + 4V + 4V, 3·4V) = 12V
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.STANDARD, 1024) == 12 * 1000
    # chunked (8 chunks): max((2 + 4 + 0.5)V, (4 + 1 + 0.25)V) = 6.5V
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.CHUNKED, 1024) == 6.5 * 1000
    # fused: ⌈V/h⌉ = 4 chunks of 256 tokens: (2 + 4)·V·256/1024 + 2h
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.FUSED, 1024) == 6 * 1000 / 4 + 512


def test_nf4_bits():
    assert nf4_bits_per_weight(LoraSetup(double_quant=True)) == 4 + 8 / 64 + 32 / (64 * 256)
    assert nf4_bits_per_weight(LoraSetup(double_quant=False)) == 4.5


def test_mixed_precision_adam_is_16_bytes_per_parameter(catalog):
    arch = catalog.architecture("llama-2-7b")
    psi = arch.total_params
    est = estimate_memory(arch, Training(precision=Precision.BF16_MIXED), Layout())
    t = est.gpu_terms
    assert (t["weights_trainable"], t["gradients"], t["optimizer_states"]) == (4 * psi, 4 * psi, 8 * psi)
    # autocast keeps a 16-bit copy of every matmul weight (blocks + untied LM head)
    assert t["autocast_weight_copies"] == 2 * (arch.matrix_params + arch.lm_head_params)


def test_zero_stages_shard_what_the_paper_says(catalog):
    arch = catalog.architecture("llama-2-7b")
    psi, n = arch.total_params, 8
    tr = Training(precision=Precision.BF16_MIXED)
    t1 = estimate_memory(arch, tr, Layout(dp=n, zero=ZeroStage(1), gpus_per_node=8)).gpu_terms
    t2 = estimate_memory(arch, tr, Layout(dp=n, zero=ZeroStage(2), gpus_per_node=8)).gpu_terms
    t3 = estimate_memory(arch, tr, Layout(dp=n, zero=ZeroStage(3), gpus_per_node=8)).gpu_terms
    assert (t1["weights_trainable"], t1["gradients"], t1["optimizer_states"]) == (2 * psi, 2 * psi, 12 * psi // n)
    assert (t2["gradients"], t2["optimizer_states"]) == (2 * psi // n, 12 * psi // n)
    assert (t3["weights_trainable"], t3["gradients"], t3["optimizer_states"]) == (
        2 * psi // n,
        2 * psi // n,
        12 * psi // n,
    )


def test_lora_and_qlora_states(catalog):
    arch = catalog.architecture("llama-2-7b")
    lora = LoraSetup(rank=8, target_modules=("q_proj", "v_proj"))
    ps = split_params(arch, Training(method=Method.LORA, lora=lora))
    assert ps.trainable == 32 * 2 * 8 * (4096 + 4096)  # 4,194,304 adapter parameters
    est = estimate_memory(arch, Training(method=Method.QLORA, precision=Precision.BF16_PURE, lora=lora), Layout())
    frozen = arch.matrix_params * (4 + 8 / 64 + 32 / 16384) / 8 + (arch.total_params - arch.matrix_params) * 2
    assert est.gpu_terms["weights_frozen"] == pytest.approx(frozen, abs=2)
    assert est.gpu_terms["optimizer_states"] == 2 * 2 * ps.trainable  # bf16 Adam moments


def test_eight_bit_and_paged(catalog):
    arch = catalog.architecture("llama-3.2-1b")
    base = Training(precision=Precision.BF16_PURE)
    eight = estimate_memory(arch, Training(precision=Precision.BF16_PURE, optimizer=Optimizer.ADAMW_8BIT), Layout())
    plain = estimate_memory(arch, base, Layout())
    assert eight.gpu_terms["optimizer_states"] < plain.gpu_terms["optimizer_states"]
    paged = estimate_memory(arch, Training(precision=Precision.BF16_PURE, optimizer=Optimizer.PAGED_ADAMW), Layout())
    assert paged.gpu_terms["optimizer_states"] == 0
    assert paged.gpu_terms["optimizer_paged"] == plain.gpu_terms["optimizer_states"]
    assert paged.host_bytes_per_node == plain.gpu_terms["optimizer_states"]


def test_offload_moves_states_to_host(catalog):
    arch = catalog.architecture("llama-2-7b")
    tr = Training(precision=Precision.BF16_MIXED)
    on = estimate_memory(arch, tr, Layout(dp=4, zero=ZeroStage(3), gpus_per_node=4))
    off = estimate_memory(arch, tr, Layout(dp=4, zero=ZeroStage(3), offload=Offload.OPTIMIZER_PARAMS, gpus_per_node=4))
    assert off.gpu_terms["optimizer_states"] == 0 and off.gpu_terms["weights_trainable"] == 0
    moved = off.host_terms["optimizer_states_offloaded"] + off.host_terms["weights_offloaded"]
    assert moved == pytest.approx(4 * (on.gpu_terms["optimizer_states"] + on.gpu_terms["weights_trainable"]), abs=8)

"""Hand-computed arithmetic for each term of the memory model."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.arch import architecture_from_hf
from ftplan.errors import JobError
from ftplan.memory import (
    AttentionMask,
    Layout,
    LoraSetup,
    Loss,
    Method,
    ModelOutput,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Training,
    ZeroGrad,
    ZeroStage,
    estimate_memory,
)
from ftplan.memory.activations import (
    FULL,
    Dtypes,
    Grads,
    layer_bytes_per_token,
    layer_constant_bytes,
    loss_bytes_per_token,
)
from ftplan.memory.estimate import _folded_bytes
from ftplan.memory.overheads import ALLOCATOR_FRACTION
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


def test_lora_dropout_keeps_each_adapters_dropped_input_and_mask():
    # LoRA r=16 on q,k,v,o with fp32 adapters over a bf16 base, as above, and lora_dropout > 0:
    #   q, k, v: each adapter drops its own fp32 cast of the input and lora_A keeps the bf16 copy
    #     autocast makes of it (3 × 2h, as the cast copies before) plus the dropout mask (3 × h
    #     bytes on CUDA, 3 × 4h on a CPU, where the mask has the fp32 input's element size)
    #   o: its dropped copy 2·256 (as its own copy before) plus its mask (256 on CUDA, 4·256 on a CPU)
    # The first layer's q/k/v input needs no gradient: its dropout keeps no mask. (`ftplan measure`
    # counts the CPU figures exactly: benchmarks/measured_grid.yaml, the three lora-dropout cases.)
    arch = architecture_from_hf(TINY)
    args = (arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    targets = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
    plain = Grads(full=False, targets=targets, rank=16, adapter_cast=True)
    cuda = Grads(full=False, targets=targets, rank=16, adapter_cast=True, lora_dropout=True)
    cpu = Grads(full=False, targets=targets, rank=16, adapter_cast=True, lora_dropout=True, on_host=True)
    assert layer_bytes_per_token(*args, cuda) == 9768 + 3 * 256 + 256
    assert layer_bytes_per_token(*args, cpu) == 9768 + 3 * 4 * 256 + 4 * 256
    assert layer_bytes_per_token(*args, cuda.first_layer()) == layer_bytes_per_token(*args, plain.first_layer()) + 256
    # bf16 adapters (bf16-pure): q, k and v no longer share one input copy; each keeps a dropped one
    pure = Grads(full=False, targets=targets, rank=16, lora_dropout=True, on_host=True)
    shared = Grads(full=False, targets=targets, rank=16)
    assert layer_bytes_per_token(*args, pure) == layer_bytes_per_token(*args, shared) + (3 * 4 - 2) * 256 + 4 * 256


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
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.STANDARD) == 12 * 1000
    # chunked (8 chunks): max((2 + 4 + 0.5)V, (4 + 1 + 0.25)V) = 6.5V
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.CHUNKED) == 6.5 * 1000
    # fused: ⌈V/h⌉ = 4 chunks of 256 tokens: (2 + 4)·V·256/1024 + 2h
    assert loss_bytes_per_token(arch, Dtypes(2, 2), Loss.FUSED) == 6 * 1000 / 4 + 512


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
    # ZeRO-1 (DeepSpeed's mixed recipe, under DDP): 16-bit weights and gradients, DDP's bucket copy of
    # the gradients, fp32 master + Adam moments sharded
    assert (t1["weights_trainable"], t1["gradients"], t1["optimizer_states"]) == (2 * psi, 2 * psi, 12 * psi // n)
    assert t1["ddp_gradient_buckets"] == 2 * psi
    # ZeRO-2 as FSDP2 runs it (measured): whole 16-bit weights, fp32 gradient shards, fp32 shards + moments
    assert (t2["weights_trainable"], t2["gradients"], t2["optimizer_states"]) == (2 * psi, 4 * psi // n, 12 * psi // n)
    # ZeRO-3: the fp32 shards are the only copy of the weights; 16 bytes a parameter over n, as the paper
    assert (t3["weights_trainable"], t3["gradients"], t3["optimizer_states"]) == (4 * psi // n, 4 * psi // n,
                                                                                  8 * psi // n)  # fmt: skip
    assert t2["ddp_gradient_buckets"] == t3["ddp_gradient_buckets"] == 0


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


PHI = {
    "model_type": "phi", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "intermediate_size": 1024, "vocab_size": 1000, "partial_rotary_factor": 0.5, "tie_word_embeddings": False,
}  # fmt: skip
NEOX = {
    "model_type": "gpt_neox", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "intermediate_size": 1024, "vocab_size": 1000, "rotary_pct": 0.25, "tie_word_embeddings": False,
}  # fmt: skip


def test_parallel_residual_layers_share_the_layer_input():
    # phi, LoRA r=8 on q and v, bf16, SDPA (h=256, f=1024, a=8), per token:
    #   one LayerNorm feeding attention and MLP: input 2h + mean/rstd 8, its output once for both
    #     adapters 2h, their A outputs 2 × 2·8
    #   attention: q, k, v, output 4 × 2h, log-sum-exp 4·8
    #   MLP: gelu_new keeps 4 tensors of 2f; the frozen fc2 keeps nothing
    # = 520 + 544 + 2080 + 8192 = 11336 (what saved_tensors_hooks counted, within the CPU's
    # bf16 mean/rstd). The first layer, whose input needs no gradient, keeps neither the norm's
    # input nor anything of the MLP: 544 + 2080 = 2624.
    arch = architecture_from_hf(PHI)
    assert arch.parallel_residual and arch.rotary_dim == 16
    g = Grads(full=False, targets=frozenset({"q_proj", "v_proj"}), rank=8)
    args = (arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 64, 64, False, Recompute.NONE)
    assert layer_bytes_per_token(*args, g) == 520 + 544 + 2080 + 8192
    assert layer_bytes_per_token(*args, g.first_layer()) == 544 + 2080
    # GPT-NeoX: two norms read the same input, saved once; each has its own mean/rstd
    neox = architecture_from_hf(NEOX)
    assert neox.parallel_residual and neox.rotary_dim == 8
    g = Grads(full=False, targets=frozenset({"query_key_value"}), rank=8)
    args = (neox, "main", Dtypes(c=2, r=2), Attention.SDPA, 64, 64, False, Recompute.NONE)
    # norm 520 + qkv adapter input 512 and A output 16; attention q, k 2·2h, the fused qkv
    # storage v is a view of 6h, lse 32, output 2h; second norm 8; gelu input 2f
    assert layer_bytes_per_token(*args, g) == 520 + 528 + (1024 + 1536 + 32 + 512) + 8 + 2048
    sequential = architecture_from_hf({**NEOX, "use_parallel_residual": False})
    assert not sequential.parallel_residual


def test_rotary_tables_cover_the_rotated_dimensions_only():
    from ftplan.memory.activations import rotary_bytes

    # transformers 5 configs nest the fraction in rope_parameters
    nested = architecture_from_hf({**{k: v for k, v in PHI.items() if k != "partial_rotary_factor"},
                                   "rope_parameters": {"partial_rotary_factor": 0.25}})  # fmt: skip
    assert nested.rotary_dim == 8
    assert rotary_bytes(architecture_from_hf(PHI), Dtypes(2, 2), 64) == 2 * 64 * 16 * 2
    assert rotary_bytes(architecture_from_hf(TINY), Dtypes(2, 2), 64) == 2 * 64 * 32 * 2


def test_adamw_implementations_differ_only_in_step_temporaries(catalog):
    arch = architecture_from_hf(TINY)
    psi = arch.total_params
    largest = 1000 * 256  # the lm_head (or embedding) matrix
    est = {
        opt: estimate_memory(arch, Training(precision=Precision.FP32, optimizer=opt, seq_len=16), Layout())
        for opt in (Optimizer.ADAMW, Optimizer.ADAMW_FUSED, Optimizer.ADAMW_FORLOOP)
    }
    states = {opt: e.gpu_terms["optimizer_states"] for opt, e in est.items()}
    assert set(states.values()) == {8 * psi}
    step = {opt: e.gpu_terms["optimizer_step_temporaries"] for opt, e in est.items()}
    assert step[Optimizer.ADAMW] == 4 * psi  # sqrt(v) of every parameter at once
    assert step[Optimizer.ADAMW_FUSED] == 0
    assert step[Optimizer.ADAMW_FORLOOP] == 2 * 4 * largest  # two temporaries of the largest tensor
    # ZeRO-1 shards what the foreach and for-loop kernels see
    z = estimate_memory(
        arch, Training(precision=Precision.FP32, optimizer=Optimizer.ADAMW_FORLOOP, seq_len=16),
        Layout(dp=4, zero=ZeroStage(1), gpus_per_node=4),
    )  # fmt: skip
    assert z.gpu_terms["optimizer_step_temporaries"] == 2 * 4 * largest // 4


def test_lora_over_fp32_base_weights():
    arch = architecture_from_hf(TINY)
    lora = LoraSetup(rank=8, target_modules=("q_proj", "v_proj"), base_fp32=True)
    tr = Training(method=Method.LORA, precision=Precision.BF16_MIXED, lora=lora, seq_len=64)
    est = estimate_memory(arch, tr, Layout(micro_batch=2), gpu_arch="cpu")  # no cuBLAS workspace
    ps = split_params(arch, tr)
    assert est.gpu_terms["weights_frozen"] == 4 * ps.frozen
    # 16-bit casts kept for backward: every block linear but the first layer's q, k, v (the
    # embeddings are frozen), the lm_head, and the fp32 adapters' own casts
    blocks = 2 * (256 * 256 * 2 + 256 * 64 * 2 + 3 * 256 * 704) - (256 * 256 + 2 * 256 * 64)
    adapters = 2 * (8 * (256 + 256) + 8 * (256 + 64)) - 2 * 8 * 256  # less the first layer's A matrices
    assert est.gpu_terms["autocast_weight_copies"] == 2 * (blocks + 1000 * 256) + 2 * adapters
    # (ftplan measure: 3.01 MiB of casts and a 14.09 MiB peak for micro-batch 2 × 64 tokens)
    assert est.peak_allocated_bytes == pytest.approx(14.09 * 2**20, rel=0.005)
    with pytest.raises(JobError, match="base_fp32"):
        estimate_memory(arch, Training(method=Method.LORA, precision=Precision.BF16_PURE, lora=lora), Layout())
    with pytest.raises(JobError, match="zero 0"):  # ZeRO/FSDP mixed precision gathers 16-bit weights
        estimate_memory(arch, tr, Layout(dp=2, zero=ZeroStage(3), gpus_per_node=2))


@settings(max_examples=40, deadline=None)
@given(
    precision=st.sampled_from(["fp32", "bf16-mixed", "bf16-pure"]), targets=st.sampled_from(
        [["q_proj", "v_proj"], ["o_proj", "down_proj"], "all-linear", ["gate_proj"]]),
    recompute=st.sampled_from(["none", "full"]), mb=st.integers(1, 4), device=st.sampled_from(["cpu", "hopper"]),
)  # fmt: skip
def test_lora_dropout_only_adds_memory(precision, targets, recompute, mb, device):
    """Dropout on the adapters' inputs never lowers an estimate (each adapter keeps more, never less)."""
    arch = architecture_from_hf(TINY)
    layout = Layout(micro_batch=mb, recompute=Recompute(recompute))
    est = {}
    for p in (0.0, 0.1):
        lora = LoraSetup(rank=8, target_modules=tuple(targets) if isinstance(targets, list) else (targets,), dropout=p)
        tr = Training(method=Method.LORA, precision=Precision(precision), seq_len=128, lora=lora)
        est[p] = estimate_memory(arch, tr, layout, gpu_arch=device).peak_allocated_bytes
    assert est[0.1] >= est[0.0]


def test_gemma_norm_keeps_its_fp32_normalised_tensor():
    # Gemma's RMSNorm multiplies the fp32 normalised tensor by (1 + weight) before casting back: a
    # trained weight keeps that fp32 tensor (4h, where Llama keeps its 16-bit cast, 2h). Per layer (two
    # norms), h = 256, bf16 full fine-tuning: 2 × (4h − 2h) = 1024 bytes a token more than Llama; under
    # LoRA (frozen norm weights) nothing more a token. Whatever the tokens, each norm whose input needs a
    # gradient keeps the fp32 1 + weight (4h): a per-layer constant, 2 × 4 × 256 = 2048 bytes, and
    # none for Llama. The measured grid's gemma cases count these exactly.
    llama = architecture_from_hf(TINY)
    gemma = architecture_from_hf(TINY | {"model_type": "gemma", "head_dim": 32})
    args = ("main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(gemma, *args) - layer_bytes_per_token(llama, *args) == 2 * 2 * 256
    lora = Grads(full=False, targets=frozenset({"q_proj", "v_proj"}), rank=8)
    assert layer_bytes_per_token(gemma, *args, lora) == layer_bytes_per_token(llama, *args, lora)
    assert layer_constant_bytes(gemma, FULL) == 2 * 4 * 256
    assert layer_constant_bytes(gemma, lora.first_layer()) == 4 * 256  # the first norm's input needs none
    assert layer_constant_bytes(llama, FULL) == 0


def test_qk_norms_per_head_and_over_the_projection():
    # Qwen3 (per head, Llama-style): q's norm keeps its fp32 input (4·q), one fp32 rsqrt a head, and under
    # full fine-tuning its 16-bit cast (c·q); k's the same over kv. TINY: q = 256 (8 heads of 32),
    # kv = 64 (2 heads). bf16 full: (4·256 + 4·8 + 2·256) + (4·64 + 4·2 + 2·64) = 1960 bytes a token.
    # OLMo 2 (over the whole projection, fp32 scaled): one rsqrt each and the fp32 normalised tensor:
    # (4·256 + 4 + 4·256) + (4·64 + 4 + 4·64) = 2568, and OLMo 2's own norm placement elsewhere.
    args = ("main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    llama = layer_bytes_per_token(architecture_from_hf(TINY), *args)
    assert layer_bytes_per_token(architecture_from_hf(TINY | {"model_type": "qwen3", "head_dim": 32}), *args) == (
        llama + 1960
    )
    olmo = architecture_from_hf(TINY | {"model_type": "olmo2"})
    assert olmo.qk_norm == "full" and olmo.norm_placement == "post"
    assert olmo.layer_vector_params["main"] == 2 * 256 + 256 + 64  # two norms of h, q norm, k norm


def test_modules_to_save_stay_16_bit_under_a_mixed_recipe():
    # LoRA r=8 on q (256→256) and v (256→64) over 2 layers: 2 × 8 × (512 + 320) = 13,312 fp32 adapter
    # parameters; the lm_head copy (1000 × 256 = 256,000) keeps the bf16 base's dtype: weights,
    # gradients and both Adam moments at 2 bytes. Without ZeRO, bf16-mixed otherwise keeps 4.
    arch = architecture_from_hf(TINY)
    lora = LoraSetup(rank=8, target_modules=("q_proj", "v_proj"), modules_to_save=("lm_head",))
    tr = Training(method=Method.LORA, precision=Precision.BF16_MIXED, seq_len=64, lora=lora)
    est = estimate_memory(arch, tr, Layout())
    adapters, head = 2 * 8 * (512 + 320), 1000 * 256
    assert est.gpu_terms["weights_trainable"] == 4 * adapters + 2 * head
    assert est.gpu_terms["gradients"] == 4 * adapters + 2 * head
    assert est.gpu_terms["optimizer_states"] == 2 * (4 * adapters + 2 * head)
    pure = estimate_memory(arch, Training(method=Method.LORA, precision=Precision.BF16_PURE, seq_len=64, lora=lora),
                           Layout())  # fmt: skip
    assert pure.gpu_terms["weights_trainable"] == 2 * (adapters + head)  # unchanged where all is 16-bit


def test_zeroed_gradients_are_held_through_forward_and_backward():
    # set_to_none=False keeps the gradients allocated through the next forward: the
    # forward/backward moment gains exactly the gradient bytes, as gradient accumulation does.
    arch = architecture_from_hf(TINY)
    freed = estimate_memory(arch, Training(seq_len=64), Layout())
    zeros = estimate_memory(arch, Training(seq_len=64, zero_grad=ZeroGrad.ZEROS), Layout())
    accum = estimate_memory(arch, Training(seq_len=64), Layout(grad_accum=2))
    grads = freed.gpu_terms["gradients"]
    assert zeros.phase_bytes["forward/backward"] == freed.phase_bytes["forward/backward"] + grads
    assert zeros.phase_bytes["forward/backward"] == accum.phase_bytes["forward/backward"]
    assert zeros.phase_bytes["optimizer step"] == freed.phase_bytes["optimizer step"]


def test_kept_model_output_holds_its_logits_in_every_phase():
    # A loop that keeps the output holds its logits (the lm_head's dtype; fp32 before Transformers
    # 4.46) from the loss through the optimizer step: exactly V·tokens·size more in each phase.
    arch = architecture_from_hf(TINY)
    lay = Layout(micro_batch=3)
    dropped = estimate_memory(arch, Training(seq_len=64), lay)
    for output, size in ((ModelOutput.KEPT, 2), (ModelOutput.KEPT_FP32, 4)):
        kept = estimate_memory(arch, Training(seq_len=64, model_output=output), lay)
        logits = size * 1000 * 64 * 3
        assert kept.gpu_terms["logits_kept"] == logits
        for phase, value in dropped.phase_bytes.items():
            assert kept.phase_bytes[phase] == value + logits
        for (a, b), (a0, b0) in zip(kept.fb_lines, dropped.fb_lines, strict=True):
            assert (a, b) == pytest.approx((a0, b0 + logits / 3))
    # a fused loss returns no logits, so there is nothing to keep
    fused = Training(seq_len=64, loss=Loss.FUSED)
    assert estimate_memory(arch, replace(fused, model_output=ModelOutput.KEPT_FP32), lay).gpu_terms["logits_kept"] == 0


def test_qlora_loads_the_whole_quantised_model_on_every_gpu():
    # bitsandbytes quantises as weights reach the GPU: each GPU holds every 4-bit weight (and one
    # 16-bit weight being quantised) before ZeRO-3 shards them; that moment reserves what it allocates.
    wide = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 8, "num_attention_heads": 16}
    arch = architecture_from_hf(TINY | wide)
    lora = LoraSetup(rank=8, target_modules=("q_proj", "v_proj"))
    tr = Training(method=Method.QLORA, precision=Precision.BF16_PURE, seq_len=16, lora=lora)
    alone = estimate_memory(arch, tr, Layout())
    whole = alone.gpu_terms["weights_frozen"]
    staging = 2 * 5632 * 2048  # the largest linear (gate/up/down), in bf16
    adapters = alone.gpu_terms["weights_trainable"]
    assert alone.phase_bytes.get("loading", 0) <= alone.peak_allocated_bytes  # unsharded: training holds as much
    sharded = estimate_memory(arch, tr, Layout(dp=8, zero=ZeroStage.PARAMETERS, gpus_per_node=8))
    assert sharded.phase_bytes["loading"] == pytest.approx(whole + max(staging, adapters), abs=1)
    assert sharded.peak_phase == "loading" and sharded.peak_allocated_bytes == sharded.phase_bytes["loading"]
    assert sharded.peak_reserved_bytes == sharded.peak_allocated_bytes
    assert "load_unsharded_weights" in sharded.peak_terms
    lora_only = estimate_memory(arch, replace(tr, method=Method.LORA), Layout(dp=8, zero=ZeroStage.PARAMETERS))
    assert "loading" not in lora_only.phase_bytes  # 16-bit weights load on the host and shard as they move


def test_reserved_fragments_only_what_a_step_allocates_beyond_the_states():
    arch = architecture_from_hf(TINY)
    est = estimate_memory(arch, Training(seq_len=256), Layout(micro_batch=4))
    g = est.gpu_terms
    states = g["weights_trainable"] + g["weights_frozen"] + g["optimizer_states"] + g["cublas_workspace"]
    step = est.peak_allocated_bytes
    expected = step + ALLOCATOR_FRACTION * (step - states)
    assert est.peak_reserved_bytes == int(expected)
    assert g["allocator_cache"] == est.peak_reserved_bytes - step


def test_phi_family_keeps_a_copy_of_the_attention_output_under_sdpa():
    # phi, phi3 and GPT-NeoX hand o_proj a copy of the SDPA output: full fine-tuning keeps both,
    # c·q = 2·256 more a token and layer than Llama's shared tensor (measured: the grid's
    # *-full-*-sdpa cases). phi3's fused qkv also keeps its whole projection where v would be a
    # view: c·(q + kv) = 2·(256 + 64). Eager attention, whose output o_proj reads in place, is equal.
    llama = architecture_from_hf(TINY)
    phi3 = architecture_from_hf(TINY | {"model_type": "phi3"})
    args = ("main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(phi3, *args) - layer_bytes_per_token(llama, *args) == 2 * (256 + 64) + 2 * 256
    eager = ("main", Dtypes(c=2, r=2), Attention.EAGER, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(phi3, *eager) == layer_bytes_per_token(llama, *eager)


def test_fp32_adapters_over_a_bf16_model_without_autocast():
    # bf16-fp32-adapters (PEFT's default on a model loaded in bf16): LoRA r=16 on q, k, v, o.
    # Per token and layer against bf16-pure's shared 16-bit input: q, k, v each keep their own fp32
    # copy of the norm output (3 × 4h instead of one 2h) and fp32 A outputs (3 × 4·16 instead of
    # 3 × 2·16); o's adapter keeps its fp32 input copy (4·256) and A output (4·16), where bf16-pure
    # reads o's input in place and keeps a 2·16 A output.
    arch = architecture_from_hf(TINY)
    targets = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
    args = (arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    pure = layer_bytes_per_token(*args, Grads(full=False, targets=targets, rank=16))
    fp32 = layer_bytes_per_token(*args, Grads(full=False, targets=targets, rank=16, adapter_fp32=True))
    assert fp32 - pure == (3 * 4 * 256 - 2 * 256) + 3 * 2 * 16 + 4 * 256 + 2 * 16
    # States: adapters in fp32 (weights, gradients, two Adam moments), the base in bf16, and no
    # autocast copies; full fine-tuning has no adapters and is refused.
    lora = LoraSetup(rank=8, target_modules=("q_proj", "v_proj"))
    tr = Training(method=Method.LORA, precision=Precision.BF16_FP32_ADAPTERS, seq_len=64, lora=lora)
    est = estimate_memory(arch, tr, Layout())
    adapters = 2 * 8 * (512 + 320)
    assert est.gpu_terms["weights_trainable"] == est.gpu_terms["gradients"] == 4 * adapters
    assert est.gpu_terms["optimizer_states"] == 8 * adapters
    assert est.gpu_terms["weights_frozen"] == 2 * split_params(arch, tr).frozen
    assert est.gpu_terms["autocast_weight_copies"] == 0
    with pytest.raises(JobError, match="bf16-fp32-adapters"):
        estimate_memory(arch, Training(method=Method.FULL, precision=Precision.BF16_FP32_ADAPTERS), Layout())
    # Backward of an adapter holds fp32 gradients of its sum and scaled output (8 bytes an output
    # element) and of lora_B's input (4·r): with up_proj adapted, 8·704 + 4·16 more a token in the
    # backward workspace, which is where a recomputed step peaks (measured: the grid's
    # mistral-lora-fp32-adapters-recompute).
    up = LoraSetup(rank=16, target_modules=("up_proj",))
    ws = {
        p: estimate_memory(arch, Training(method=Method.LORA, precision=p, seq_len=64, lora=up), Layout())
        for p in (Precision.BF16_PURE, Precision.BF16_FP32_ADAPTERS)
    }
    diff = (
        ws[Precision.BF16_FP32_ADAPTERS].gpu_terms["backward_workspace"]
        - ws[Precision.BF16_PURE].gpu_terms["backward_workspace"]
    )
    # (the RMSNorm's backward, 20 bytes × 256 a token, is the bf16-pure step's widest moment)
    assert diff == 64 * (max(2 * 2 * 704 + 8 * 704 + 4 * 16, 20 * 256) - max(2 * 2 * 704, 20 * 256))


def test_an_explicit_attention_mask_costs_s_squared_per_layer():
    # SDPA with a mask over 128 keys, bf16, h=256, 8 heads over 2 k/v heads: SDPA keeps the additive
    # mask in the query's dtype (2·128 a query token) and k, v expanded to all heads (2 × 2·(256 − 64)).
    arch = architecture_from_hf(TINY)
    args = (arch, "main", Dtypes(c=2, r=2), Attention.SDPA, 128, 128, False, Recompute.NONE)
    plain = layer_bytes_per_token(*args)
    assert layer_bytes_per_token(*args, mask_len=128) - plain == 2 * 128 + 2 * 2 * (256 - 64)
    # one k/v head: repeat_kv returns a view, so only the mask is added
    mqa = architecture_from_hf(TINY | {"num_key_value_heads": 1})
    margs = (mqa, *args[1:])
    assert layer_bytes_per_token(*margs, mask_len=128) - layer_bytes_per_token(*margs) == 2 * 128
    # eager attention keeps its probabilities whatever the mask: nothing is added
    eager = (arch, "main", Dtypes(c=2, r=2), Attention.EAGER, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(*eager, mask_len=128) == layer_bytes_per_token(*eager)
    # the job option: every layer, 2 layers × micro-batch 2 × 128 queries × (256 + 768) bytes; on a GPU
    # the key length rounds up to 16 (132 → 144)
    base = Training(seq_len=128, precision=Precision.BF16_PURE)
    for mask in (AttentionMask.CAUSAL, AttentionMask.PADDED):
        tr = Training(seq_len=128, precision=Precision.BF16_PURE, attention_mask=mask)
        got = estimate_memory(arch, tr, Layout(micro_batch=2), gpu_arch="cpu").activation_terms["layers"]
        want = estimate_memory(arch, base, Layout(micro_batch=2), gpu_arch="cpu").activation_terms["layers"]
        assert got - want == 2 * 2 * 128 * (2 * 128 + 768)
    odd = {
        m: estimate_memory(arch, Training(seq_len=132, precision=Precision.BF16_PURE, attention_mask=m), Layout())
        for m in (AttentionMask.NONE, AttentionMask.PADDED)
    }
    added = odd[AttentionMask.PADDED].activation_terms["layers"] - odd[AttentionMask.NONE].activation_terms["layers"]
    assert added == 2 * 132 * (2 * 144 + 768)


def test_sliding_window_layers_build_a_mask_once_the_sequence_reaches_the_window():
    # transformers skips the mask while seq_len < window; at seq_len ≥ window each sliding layer gets one
    mistral = architecture_from_hf(TINY | {"model_type": "mistral", "sliding_window": 128})
    assert mistral.sliding_layers == (True, True)
    tr = {s: Training(seq_len=s, precision=Precision.BF16_PURE) for s in (127, 128)}
    est = {s: estimate_memory(mistral, tr[s], Layout(), gpu_arch="cpu") for s in tr}
    plain = {s: estimate_memory(architecture_from_hf(TINY), tr[s], Layout(), gpu_arch="cpu") for s in tr}
    assert est[127].activation_terms["layers"] == plain[127].activation_terms["layers"]
    assert est[128].activation_terms["layers"] - plain[128].activation_terms["layers"] == 2 * 128 * (256 + 768)
    assert any("sliding-window" in n for n in est[128].notes) and not est[127].notes
    # Gemma 2 alternates (layers 0, 2, ...), Qwen2 slides from max_window_layers only with use_sliding_window,
    # an explicit layer_types list wins, and a null window means none
    assert architecture_from_hf(TINY | {"model_type": "gemma2", "num_hidden_layers": 3}).sliding_layers == (
        True, False, True,
    )  # fmt: skip
    qwen = TINY | {"model_type": "qwen2", "num_hidden_layers": 3, "sliding_window": 64, "max_window_layers": 1}
    assert architecture_from_hf(qwen).sliding_window == 0
    assert architecture_from_hf(qwen | {"use_sliding_window": True}).sliding_layers == (False, True, True)
    typed = TINY | {"model_type": "mistral", "layer_types": ["full_attention", "sliding_attention"]}
    assert architecture_from_hf(typed).sliding_layers == (False, True)
    assert architecture_from_hf(TINY | {"model_type": "mistral", "sliding_window": None}).sliding_window == 0
    assert architecture_from_hf(TINY | {"model_type": "mistral"}).sliding_window == 4096  # MistralConfig default


def test_gemma2_soft_capping_keeps_its_tanh_outputs():
    # final_logit_softcapping: tanh keeps its output, c·V a token, from the loss's forward to its backward
    # (saved and at the peak); attn_logit_softcapping under eager: c·heads·kv_len a token and layer. The
    # fused loss caps inside its chunks. Gemma2Config's defaults (30.0, 50.0) apply when a config is silent.
    g2 = {"model_type": "gemma2", "head_dim": 32}
    capped = architecture_from_hf(TINY | g2)
    plain = architecture_from_hf(TINY | g2 | {"final_logit_softcapping": None, "attn_logit_softcapping": None})
    assert capped.final_softcap and capped.attn_softcap and not plain.final_softcap
    dt = Dtypes(c=2, r=2)
    for loss in (Loss.STANDARD, Loss.CHUNKED):
        assert loss_bytes_per_token(capped, dt, loss) - loss_bytes_per_token(plain, dt, loss) == 2 * 1000
    assert loss_bytes_per_token(capped, dt, Loss.FUSED) == loss_bytes_per_token(plain, dt, Loss.FUSED)
    eager = ("main", dt, Attention.EAGER, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(capped, *eager) - layer_bytes_per_token(plain, *eager) == 2 * 8 * 128
    sdpa = ("main", dt, Attention.SDPA, 128, 128, False, Recompute.NONE)
    assert layer_bytes_per_token(capped, *sdpa) == layer_bytes_per_token(plain, *sdpa)


MOE = {
    "model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 100, "num_local_experts": 4,
    "num_experts_per_tok": 2,
}  # fmt: skip


def test_lora_on_moe_experts_is_folded_into_the_weights():
    # PEFT over transformers 5: w1 + w3 are one gate_up_proj (4 experts × 192 × 64) adapted at rank 2r,
    # A (4·2r × 64) and B (192 × 4·2r); w2 (down, 4 × 64 × 96): A (4·r × 96), B (64 × 4·r); the router
    # (gate, 4 × 64): A (r × 64), B (4 × r). r = 4, two layers, bf16-pure.
    arch = architecture_from_hf(MOE)
    lora = LoraSetup(rank=4, target_modules=("gate", "w1", "w2", "w3"))
    tr = Training(method=Method.LORA, precision=Precision.BF16_PURE, seq_len=32, lora=lora)
    adapters = 2 * ((32 * 64 + 192 * 32) + (16 * 96 + 64 * 16) + (4 * 64 + 4 * 4))
    assert split_params(arch, tr).trainable == adapters
    # backward keeps each layer's merged weights, W + B·A, in the weights' dtype (bf16): experts and router;
    # the first gradient backward computes is the down projection's merged weight, full-sized
    saves = Grads(
        full=False, targets=frozenset(lora.target_modules), rank=4, param_targets=frozenset(lora.target_modules)
    )
    merged = 2 * (4 * 192 * 64 + 4 * 64 * 96 + 4 * 64)
    assert _folded_bytes(arch, saves, 2, False) == (merged, 0, 2 * 4 * 64 * 96)
    # fp32 adapters over the bf16 base (bf16-mixed) add the product's bf16 copies of the factors
    cast = Grads(full=False, targets=saves.targets, rank=4, param_targets=saves.targets, adapter_cast=True)
    assert _folded_bytes(arch, cast, 2, False)[1] == 2 * adapters // 2
    est = {
        rc: estimate_memory(arch, tr, Layout(recompute=rc), gpu_arch="hopper")
        for rc in (Recompute.NONE, Recompute.FULL)
    }
    assert any("merges W + B·A" in n for n in est[Recompute.NONE].notes)
    # all-linear adapts the router too; gate and up are one tensor; dropout cannot apply to a folded adapter
    every = LoraSetup(rank=4, target_modules=("all-linear",))
    assert split_params(arch, Training(method=Method.LORA, lora=every)).trainable > adapters
    with pytest.raises(JobError, match="fused gate_up_proj"):
        estimate_memory(arch, Training(method=Method.LORA, lora=LoraSetup(target_modules=("w1", "w2"))), Layout())
    with pytest.raises(JobError, match="dropout"):
        estimate_memory(
            arch, Training(method=Method.LORA, lora=LoraSetup(dropout=0.1, target_modules=("w2",))), Layout()
        )


def test_offload_sends_gradient_shards_to_the_host_as_backward_makes_them(catalog):
    # Llama-2-7B, bf16-mixed under ZeRO-2: with offload (DeepSpeed's) the GPU keeps one block's 16-bit
    # gradients (the largest block: 4·4096² + 3·4096·11008 matrix weights and two 4096 norms, at 2
    # bytes), or the embedding's (32000 × 4096) where that is larger; without offload (FSDP2), its whole
    # fp32 gradient shard.
    arch = catalog.architecture("llama-2-7b")
    tr = Training(precision=Precision.BF16_MIXED)
    lay = dict(dp=4, zero=ZeroStage(2), gpus_per_node=4)
    on = estimate_memory(arch, tr, Layout(**lay))
    off = estimate_memory(arch, tr, Layout(**lay, offload=Offload.OPTIMIZER))
    assert on.gpu_terms["gradients"] == pytest.approx(4 * arch.total_params / 4, abs=8)
    assert off.gpu_terms["gradients"] == 2 * max(4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096, 32000 * 4096)
    # LoRA under FSDP's CPU offload: the adapters' fp32 gradients of one layer (r = 16 on q, k, v, o:
    # 16 × 8192 × 4 a layer, reduced in fp32)
    lora = Training(method=Method.LORA, precision=Precision.BF16_MIXED, lora=LoraSetup(rank=16))
    off_lora = estimate_memory(arch, lora, Layout(dp=4, zero=ZeroStage(3), offload=Offload.OPTIMIZER_PARAMS,
                                                 gpus_per_node=4))  # fmt: skip
    assert off_lora.gpu_terms["gradients"] == 4 * 16 * 8192 * 4


def test_nf4_quantisation_constants_are_neither_sharded_nor_offloaded(catalog):
    # QLoRA's constants (double quantisation, block 64: 8/64 + 32/(64·256) bits a weight) live in
    # bitsandbytes' quant_state, not in a parameter: ZeRO-3/FSDP shards only the 4-bit data, and CPU
    # offload leaves the constants on every GPU.
    arch = catalog.architecture("llama-2-7b")
    tr = Training(method=Method.QLORA, precision=Precision.BF16_PURE, lora=LoraSetup(rank=16))
    ps = split_params(arch, tr)
    state = ps.frozen_matrix * (8 / 64 + 32 / (64 * 256)) / 8
    one = estimate_memory(arch, tr, Layout()).gpu_terms["weights_frozen"]
    four = estimate_memory(arch, tr, Layout(dp=4, zero=ZeroStage(3), gpus_per_node=4)).gpu_terms["weights_frozen"]
    assert four == int((one - state) / 4 + state)
    off = estimate_memory(arch, tr, Layout(dp=4, zero=ZeroStage(3), offload=Offload.OPTIMIZER_PARAMS, gpus_per_node=4))
    assert off.gpu_terms["weights_frozen"] == int(state)


def test_qlora_leaves_a_moes_fused_experts_and_router_16_bit():
    # transformers 5 hands bitsandbytes only nn.Linear modules: Mixtral's attention projections are NF4,
    # its fused 3-D experts (8 × 3 × 128 × 256 a layer) and router module (8 × 128) stay bf16.
    # h = 128, f = 256, 2 layers, 4 heads of 32 with 2 k/v heads: attention 128·(128 + 64 + 64) + 128·128.
    cfg = {"model_type": "mixtral", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 600, "num_local_experts": 8}  # fmt: skip
    arch = architecture_from_hf(cfg)
    tr = Training(method=Method.QLORA, precision=Precision.BF16_MIXED, seq_len=64, lora=LoraSetup())
    ps = split_params(arch, tr)
    experts, router, attention = 8 * 3 * 128 * 256, 8 * 128, 128 * 256 + 128 * 128
    assert ps.frozen_unquantized == 2 * (experts + router)
    assert ps.frozen_matrix == 2 * attention
    est = estimate_memory(arch, tr, Layout())
    nf4 = 2 * attention * nf4_bits_per_weight(LoraSetup()) / 8
    vectors = ps.frozen_vector + ps.frozen_embed
    assert est.gpu_terms["weights_frozen"] == int(nf4 + 2 * (2 * (experts + router) + vectors))
    assert any("stay 16-bit" in n for n in est.notes)


L4 = {
    "model_type": "llama4_text", "hidden_size": 128, "intermediate_size": 64, "intermediate_size_mlp": 192,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 4, "vocab_size": 500,
    "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 32,
    "tie_word_embeddings": False,
}  # fmt: skip


def test_llama4_layers_match_saved_tensors():
    # fp32, h=128, q=128, kv=64, 4 experts of f=64, top-1, dense MLP 192; per token (traced with
    # saved_tensors_hooks, transformers 5.24, 48 tokens):
    #   each RMSNorm 4h + 4 + 4h (1028) and its output 4h (the next linears' input): 1540
    #   L2 norms on q and k: 4·128 + 16 + 4·64 + 8; SDPA q, k, v, log-sum-exp, output: 512 + 256 + 256 + 16 + 512
    #   MoE: router index 8, sigmoid 16, scores 16, repeated input 4·4·128, scaled input 2048, gate/up 4·4·128,
    #   activation and product 2 × 4·4·64; shared expert 4 × 4·64; a dense MLP: 4 × 4·192
    #   (the tracer attributes the rotary table, 64 bytes a token here, to layer 0; the model counts it once)
    arch = architecture_from_hf(L4)
    args = (Dtypes(c=4, r=4), Attention.SDPA, 24, 24, False, Recompute.NONE, FULL, 0)
    attention = 1540 + (512 + 16 + 256 + 8) + (512 + 256 + 256 + 16 + 512)
    moe = 8 + 16 + 16 + 2048 + 2048 + 2048 + 1024 + 1024 + 4 * 256
    assert layer_bytes_per_token(arch, "main", *args) == attention + 1540 + moe == 14680
    assert layer_bytes_per_token(arch, "main", *args, True) == 14680 - 792  # NoPE: no q/k norm
    assert layer_bytes_per_token(arch, "dense", *args) == attention + 1540 + 4 * 4 * 192 == 8560 - 64
    assert arch.stack_indices == {"dense": (0, 2), "main": (1, 3)}
    assert arch.nope_layers == (False, False, False, True) and arch.sliding_layers == (True, True, True, False)


def test_llama4_refuses_lora_on_its_router():
    arch = architecture_from_hf(L4)
    for targets in (("all-linear",), ("q_proj", "router")):
        training = Training(method=Method.LORA, seq_len=64, lora=LoraSetup(target_modules=targets))
        with pytest.raises(JobError, match="Llama 4's router"):
            estimate_memory(arch, training, Layout())
    ok = Training(method=Method.LORA, seq_len=64, lora=LoraSetup(target_modules=("q_proj", "gate_proj")))
    assert estimate_memory(arch, ok, Layout()).peak_allocated_bytes > 0  # gate without up: separate linears here


OSS = {
    "model_type": "gpt_oss", "hidden_size": 96, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 6,
    "num_experts_per_tok": 2, "vocab_size": 360, "sliding_window": 24,
}  # fmt: skip


def test_target_parameters_reach_gpt_oss_experts():
    arch = architecture_from_hf(OSS)
    both = LoraSetup(rank=4, target_modules=(), target_parameters=("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))
    ps = split_params(arch, Training(method=Method.LORA, seq_len=48, lora=both))
    # PEFT's ParamWrapper: gate_up A (E·r × h), B (2f × E·r); down A (E·r × f), B (h × E·r); two layers
    assert ps.trainable == 2 * (6 * 4 * (96 + 128) + 6 * 4 * (64 + 96))
    with pytest.raises(JobError, match="names no expert weight"):
        split_params(arch, Training(method=Method.LORA, lora=LoraSetup(target_parameters=("mlp.experts.up",))))
    with pytest.raises(JobError, match="modelled for gpt-oss's experts"):
        split_params(architecture_from_hf(L4), Training(method=Method.LORA, lora=LoraSetup(target_parameters=("x",))))
    one = LoraSetup(rank=4, target_parameters=("mlp.experts.down_proj",))
    training = Training(method=Method.LORA, seq_len=48, lora=one)
    assert estimate_memory(arch, training, Layout()).peak_allocated_bytes > 0
    with pytest.raises(JobError, match=r"To fix: target mlp\.experts\.gate_up_proj and mlp\.experts\.down_proj"):
        estimate_memory(arch, training, Layout(recompute=Recompute.FULL))


def test_zero2_holds_frozen_shards_and_a_gathered_block_as_forward_reaches_the_loss():
    # FSDP2 without resharding after forward (measured: the grid's ZeRO-2 cases): frozen weights whole and
    # sharded; as forward reaches the loss, the flat buffer of the last block gathered, in the gathered dtype
    arch = architecture_from_hf(TINY)
    lora = Training(method=Method.LORA, precision=Precision.BF16_PURE, seq_len=64, lora=LoraSetup(rank=8))
    z2, z0 = (
        estimate_memory(arch, lora, Layout(dp=4, zero=z, micro_batch=2), gpu_arch="cpu")
        for z in (ZeroStage.GRADIENTS, ZeroStage.NONE)
    )
    assert z2.gpu_terms["weights_frozen"] == pytest.approx(z0.gpu_terms["weights_frozen"] * (1 + 1 / 4))
    full = Training(method=Method.FULL, precision=Precision.FP32, seq_len=64)
    est = estimate_memory(arch, full, Layout(dp=2, zero=ZeroStage.GRADIENTS, micro_batch=2), gpu_arch="cpu")
    block = max(arch.layer_matrix_params[s] + arch.layer_vector_params[s] for s in arch.block_linears)
    tokens, v = 2 * 64, arch.vocab
    forward_loss = 4 * block + (4 * v + 4 * v) * tokens  # fp32 logits and log-softmax (no upcast)
    states = sum(est.gpu_terms[k] for k in ("weights_trainable", "optimizer_states"))
    # (it exceeds the loss's backward, 12 bytes a logit, and backward with a block's gradient being reduced)
    assert est.phase_bytes["forward/backward"] == pytest.approx(states + est.gpu_terms["activations"] + forward_loss)


def _tp(tp: int, style: str, precision: Precision = Precision.FP32) -> object:
    from ftplan.memory import SequenceParallel

    arch = architecture_from_hf(dict(TINY, num_key_value_heads=8))  # (tp must divide the key/value heads)
    tr = Training(precision=precision, seq_len=512, sequence_parallel=SequenceParallel(style))
    return estimate_memory(arch, tr, Layout(tp=tp, micro_batch=2), gpu_arch="cpu")


def test_tensor_parallel_activations_by_sequence_parallel_style():
    # megatron: every layer's saves divided by tp; torch (DTensor plans): the gathered inputs of q/k/v and
    # gate/up (fp32 full fine-tuning: one h-wide input each) kept whole, i.e. (tp - 1) shards more a token
    h, tokens, t = TINY["hidden_size"], 512 * 2, 4
    one = _tp(1, "megatron").activation_terms["layer:main"]
    mega = _tp(t, "megatron")
    torch_ = _tp(t, "torch")
    assert mega.activation_terms["layer:main"] == pytest.approx(one / t)
    gathered = 2 * 4 * h  # two inputs of h fp32 values a token
    assert torch_.activation_terms["layer:main"] - mega.activation_terms["layer:main"] == pytest.approx(
        gathered * (t - 1) * tokens / t
    )
    # the head: token ids (8 bytes a token) and the rotary tables (fp32 cos and sin of a head a position,
    # one pair a step) whole under both; the lm_head's input whole under torch
    head_one = _tp(1, "megatron").activation_terms["head"]
    whole = 8 * tokens + 2 * 512 * (h // 8) * 4
    assert mega.activation_terms["head"] == pytest.approx((head_one - whole) / t + whole)
    lm_head_input = 4 * h * tokens * (t - 1) / t
    assert torch_.activation_terms["head"] - mega.activation_terms["head"] == pytest.approx(lm_head_input)
    # DTensor's embedding gradient comes back whole: (tp - 1) shards of vocab × hidden fp32 more
    grads = torch_.gpu_terms["gradients"] - mega.gpu_terms["gradients"]
    assert grads == pytest.approx(4 * TINY["vocab_size"] * h * (t - 1) / t)


@settings(max_examples=30, deadline=None)
@given(
    tp=st.sampled_from([1, 2]),
    style=st.sampled_from(["torch", "megatron"]),
    precision=st.sampled_from([Precision.FP32, Precision.BF16_MIXED, Precision.BF16_PURE]),
)
def test_more_tensor_parallelism_never_raises_what_it_divides(tp, style, precision):
    # doubling tp never raises a GPU's activations or states, and torch's style never holds less than megatron's
    lo, hi = _tp(tp, style, precision), _tp(2 * tp, style, precision)
    for term in ("activations", "weights_trainable", "gradients", "optimizer_states"):
        assert hi.gpu_terms[term] <= lo.gpu_terms[term] + 1e-6, term
    torch_peak = _tp(2 * tp, "torch", precision).peak_allocated_bytes
    assert torch_peak >= _tp(2 * tp, "megatron", precision).peak_allocated_bytes

"""Eager attention in the time model: every query-key pair computed (the masked half too) and the score
tensors' HBM traffic, measured for eager PyTorch and derived for a fused stack."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ftplan.arch import architecture_from_hf
from ftplan.memory.setup import Attention, AttentionKernel, AttentionMask, Kernels, Precision, SequenceData, Training
from ftplan.timing import model as tm
from ftplan.timing import traffic

TINY = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000, "tie_word_embeddings": False,
}  # fmt: skip
HW = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=450.0, host_link_gbs=32.0,
                 gpus_per_node=8, network_gbps=None)  # fmt: skip


def _times(training: Training, recompute: int = 0, micro_batch: int = 2) -> tm.StepTimes:
    arch = architecture_from_hf(TINY)
    lay = (1, 1, 0, 0, recompute, micro_batch, 1)
    return tm.step_times(tm.job_flops(arch, training), arch, training, HW, *(np.array([x]) for x in lay))


def test_score_bytes_in_exact_arithmetic():
    arch = architecture_from_hf(TINY)  # 8 heads, 2 layers
    eager = Training(seq_len=128, attention=Attention.EAGER, precision=Precision.BF16_MIXED, dropout=False)
    # the matmuls' 2 forward and 4 backward 2-byte score tensors a head, and the measured softmax chain's
    # 24 and 28 bytes a head and 4 a layer (the mask's read), over 2 layers
    assert traffic.score_bytes(arch, eager) == (2 * ((2 * 2 + 24) * 8 + 4), 2 * ((4 * 2 + 28) * 8 + 0))
    fused = dataclasses.replace(eager, kernels=Kernels.FUSED)
    # a fused softmax: read and write forward, read two and write one backward
    assert traffic.score_bytes(arch, fused) == (2 * 4 * 2 * 8, 2 * 7 * 2 * 8)
    fp32 = dataclasses.replace(fused, precision=Precision.FP32)
    assert traffic.score_bytes(arch, fp32) == (2 * 4 * 4 * 8, 2 * 7 * 4 * 8)
    # attention dropout (a GPT-2-style config): a read, a write and a one-byte mask a head, each way
    dropping = dataclasses.replace(arch, attention_dropout=0.1)
    with_dropout = dataclasses.replace(fused, dropout=True)
    assert traffic.score_bytes(dropping, with_dropout) == (2 * (4 * 2 + 5) * 8, 2 * (7 * 2 + 5) * 8)
    assert traffic.score_bytes(arch, dataclasses.replace(eager, attention=Attention.SDPA)) == (0.0, 0.0)


def test_eager_attention_computes_the_whole_square_and_moves_its_scores():
    eager = Training(seq_len=128, attention=Attention.EAGER, dropout=False)
    sdpa = dataclasses.replace(eager, attention=Attention.SDPA)
    arch = architecture_from_hf(TINY)
    fe, fs = tm.job_flops(arch, eager), tm.job_flops(arch, sdpa)
    assert fe.attention == fs.attention  # (model FLOPs, what MFU counts: the causal half)
    for recompute in (0, 1, 2):
        attention = fe.hardware(recompute)[1]
        causal = fe.attention + (fe.recompute_selective if recompute else 0.0)
        assert attention == 2 * causal  # no flash-backward recompute; the masked half computed
        te = _times(eager, recompute)
        # the score traffic: 2 sequences of 128 tokens, each token's bytes per key times its 128 keys, the
        # forward's twice under recomputation
        again = 2.0 if recompute else 1.0
        scores = 2 * 128 * 128 * (fe.scores_forward * again + fe.scores_backward) / 1e12
        without = dataclasses.replace(fe, scores_forward=0.0, scores_backward=0.0)
        lay = (1, 1, 0, 0, recompute, 2, 1)
        base = tm.step_times(without, arch, eager, HW, *(np.array([x]) for x in lay)).other[0]
        assert te.other[0] - base == pytest.approx(scores, rel=1e-12)
        assert te.total[0] > _times(sdpa, recompute).total[0]


def test_packing_does_not_shorten_an_eager_or_masked_kernels_rows():
    data = SequenceData(mean=256, p95=512, packing=True)
    flash = Training(seq_len=2048, data=data)
    eager = dataclasses.replace(flash, attention=Attention.EAGER)
    # a flash kernel over packed documents attends within each; eager attention over the whole 2048-token row
    assert _times(flash).compute[0] < _times(dataclasses.replace(flash, data=None)).compute[0]
    whole = dataclasses.replace(eager, data=None)
    assert _times(eager).compute[0] == pytest.approx(_times(whole).compute[0], rel=1e-12)


def test_sdpa_with_a_mask_tensor_runs_every_block_but_a_named_flash_kernel_stays_causal():
    arch = architecture_from_hf(TINY)
    plain = Training(seq_len=128)
    for mask in (AttentionMask.CAUSAL, AttentionMask.PADDED):
        masked = dataclasses.replace(plain, attention_mask=mask)
        assert tm.job_flops(arch, masked).hardware(0)[1] == 2 * tm.job_flops(arch, plain).hardware(0)[1]
        assert traffic.score_bytes(arch, masked) == (0.0, 0.0)  # (the memory-efficient kernel keeps them on chip)
        cudnn = dataclasses.replace(masked, attention_kernel=AttentionKernel.CUDNN)
        assert tm.job_flops(arch, cudnn).hardware(0)[1] == tm.job_flops(arch, plain).hardware(0)[1]
    bert_config = {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "intermediate_size": 512, "vocab_size": 1000}  # fmt: skip
    encoder = architecture_from_hf(bert_config)
    bert = Training(seq_len=128, attention=Attention.EAGER)
    assert not tm.job_flops(encoder, bert).attention_square  # (bidirectional: already the whole square)


def test_the_score_table_is_what_eager_pytorch_moves(benchmark_script):
    """``EAGER_SCORES`` against a live measurement of a tiny Llama's layer in bf16-mixed (8 heads): the bytes eager
    attention adds over SDPA per key a token attends, forward and backward."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    bench = benchmark_script("layer_traffic")
    per_head_fwd, per_head_bwd, shared_fwd, shared_bwd = traffic.EAGER_SCORES["mixed"]
    forward, backward = bench.score_slopes("llama", "mixed", 8)
    assert forward == pytest.approx(8 * per_head_fwd + shared_fwd, abs=1e-6)
    assert backward == pytest.approx(8 * per_head_bwd + shared_bwd, abs=1e-6)

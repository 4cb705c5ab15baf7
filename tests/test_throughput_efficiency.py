"""The catalog's time-model efficiencies and the per-operation dispatch time are what
benchmarks/throughput_accuracy.py --fit gets from the published llm-foundry and Qwen runs (the fit is reproducible
from the data in the repository)."""

from __future__ import annotations

import pytest

from ftplan.timing import dispatch


def test_the_catalogs_efficiencies_are_the_fit_on_llm_foundrys_runs(catalog, benchmark_script):
    bench = benchmark_script("throughput_accuracy")
    cases, skipped = bench.load_cases(catalog)
    fitted, per_op = bench.fit_efficiencies(cases, catalog)
    assert pytest.approx(per_op, abs=0.05e-6) == dispatch.SECONDS_PER_OP  # (the constant, to 0.1 µs)
    for family, gpus in bench.FAMILIES.items():
        matmuls, attention, errs = fitted[family]
        for gpu in gpus:
            assert catalog.gpus[gpu].efficiency == pytest.approx(matmuls, abs=5e-4)
            assert catalog.gpus[gpu].attention_efficiency == pytest.approx(attention, abs=5e-4)
        assert attention < matmuls  # attention kernels run below the matmuls' efficiency
        for gpu in gpus:  # the weight matmuls' alone: below the GPU's measured maximum achievable matmul FLOPS
            g = catalog.gpus[gpu]
            assert matmuls < g.mamf_tflops["bf16"] / g.tflops.bf16
        assert len(errs) >= 15 and sorted(errs)[len(errs) // 2] < 0.10  # the fit's median error on its cases
    h200, h100 = catalog.gpus["h200-sxm-141gb"], catalog.gpus["h100-sxm-80gb"]  # (the H100's compute)
    assert (h200.efficiency, h200.attention_efficiency) == (h100.efficiency, h100.attention_efficiency)
    assert sum(skipped.values()) + len(cases) > 200 and len(cases) > 100


def test_context_parallel_cases_are_laid_out_over_cp_ranks(catalog, benchmark_script):
    bench = benchmark_script("throughput_accuracy")
    cases, _ = bench.load_cases(catalog)
    c = next(c for c in cases if c["id"] == "nemo-longseq-llama2-7b-32k")  # 32 GPUs: tp 2, cp 2, dp 8
    assert (c["tp"], c["cp"], c["dp"]) == (2, 2, 8)
    # each GPU trains on its cp share of the tensor-parallel group's sequences
    assert bench._tokens_per_gpu(c) == c["micro_batch"] * c["grad_accum"] * 32768 / 4


def test_nemos_flop_formula_is_megatron_cores_for_a_gated_mlp(catalog, benchmark_script):
    bench = benchmark_script("throughput_accuracy")
    for model in ("llama-2-7b", "llama-3.1-70b"):
        arch = catalog.architecture(model)
        args = (arch.layers, arch.hidden, 4096, arch.vocab, arch)
        nemo, mcore = bench.FLOP_CONVENTIONS["nemo"](*args), bench.FLOP_CONVENTIONS["mcore"](*args)
        assert nemo == pytest.approx(mcore, rel=1e-12)


def test_nemotron_4_340b_has_its_published_parameter_count(benchmark_script):
    from ftplan.arch import architecture_from_hf

    bench = benchmark_script("throughput_accuracy")
    arch = architecture_from_hf(bench.SOURCE_CONFIGS["nemotron-340b"], "nemotron-340b")
    # Nemotron-4 340B technical report (arXiv 2406.11704): 9.4B embedding and 331.6B non-embedding parameters
    assert arch.vocab * arch.hidden * 2 == pytest.approx(9.4e9, rel=0.01)
    assert arch.total_params - 2 * arch.vocab * arch.hidden == pytest.approx(331.6e9, rel=0.005)

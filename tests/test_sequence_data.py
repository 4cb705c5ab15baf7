"""Jobs whose sequences are not all seq_len long: padded micro-batches and packed rows (time only; memory
stays sized for seq_len), and throughput counted in tokens of data, not padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.errors import JobError
from ftplan.fit import fit_job, gpu_pool
from ftplan.job import estimate_job, resolve_job
from ftplan.memory.setup import SequenceData, Training
from ftplan.plan import build_plan
from ftplan.scenario import resolve_scenario
from ftplan.schema.job import parse_job
from ftplan.schema.scenario import Scenario
from ftplan.solver import solve_campaign
from ftplan.timing import model as tm
from ftplan.verify import verify_plan

BASE = {"model": "llama-3.1-8b", "method": "lora", "seq_len": 4096, "tokens": 50_000_000, "global_batch": 32}


def _job(catalog, **fields):
    return resolve_job(parse_job(BASE | fields, "job"), catalog, "job")


def test_a_sequence_costs_its_padded_or_packed_length():
    mb = np.array([1, 2, 8])
    assert [list(x) for x in tm.sequence_lengths(Training(seq_len=4096), mb)] == [[4096] * 3] * 2
    padded = Training(seq_len=4096, data=SequenceData(900, 2500))
    # alone, a sequence costs its own length (the mean on average) and attends over it (counted at the p95:
    # long sequences hold most tokens); with others, the batch is padded to the longest (the p95)
    assert [list(x) for x in tm.sequence_lengths(padded, mb)] == [[900, 2500, 2500], [2500, 2500, 2500]]
    unknown = Training(seq_len=4096, data=SequenceData(900))  # no p95: padded to seq_len, attends over the mean
    assert [list(x) for x in tm.sequence_lengths(unknown, mb)] == [[900, 4096, 4096], [900, 4096, 4096]]
    packed = Training(seq_len=4096, data=SequenceData(900, 2500, packing=True))
    # a packed row costs seq_len tokens of data; attention spans a document (its p95 length)
    assert [list(x) for x in tm.sequence_lengths(packed, mb)] == [[4096] * 3, [2500] * 3]
    assert (padded.data_tokens, packed.data_tokens, Training(seq_len=4096).data_tokens) == (900, 4096, 4096)


def test_throughput_counts_data_not_padding(catalog):
    pool = [gpu_pool(catalog, "h100", 8, 2.0)]
    key = ["gpus", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch"]
    full = fit_job(_job(catalog), pool).layouts.set_index(key)
    job = _job(catalog, data={"mean_tokens": 1024})  # padded to seq_len whenever two sequences share a batch
    padded = fit_job(job, pool).layouts.set_index(key)
    assert full.index.is_unique and padded.index.is_unique
    both = full.join(padded.add_suffix("_pad"), how="inner")
    many = both[both.index.get_level_values("micro_batch") > 1]
    assert not many.empty
    # the same work as seq_len-long sequences, a quarter of it data
    assert np.allclose(many["step_s_pad"], many["step_s"])
    assert np.allclose(many["tokens_per_s_pad"], many["tokens_per_s"] / 4)
    # and four times the steps (whole steps) for the same tokens of data
    steps, steps_pad = math.ceil(50_000_000 / (32 * 4096)), math.ceil(50_000_000 / (32 * 1024))
    assert np.allclose(many["hours_pad"], many["hours"] * steps_pad / steps, rtol=1e-9)
    # memory is sized for the longest micro-batch either way
    assert (many["device_bytes_pad"] == many["device_bytes"]).all()
    alone = both[both.index.get_level_values("micro_batch") == 1]
    assert (alone["step_s_pad"] < alone["step_s"]).all()  # one sequence costs its own length


def test_packed_rows_attend_within_their_documents(catalog, h100_node):
    job = _job(catalog, data={"mean_tokens": 700, "p95_tokens": 2048, "packing": True})
    flops = tm.job_flops(job.arch, job.training)
    args = (np.array([1]), np.array([1]), np.array([0]), np.array([0]), np.array([0]), np.array([2]), np.array([1]))
    packed = tm.step_times(flops, job.arch, job.training, h100_node(), *args)
    hw = h100_node()
    matmuls, attention = (float(x) for x in flops.hardware(0))
    rate = hw.peak_tflops * 1e12 * hw.efficiency
    # (LoRA's adapter GEMMs at their HBM traffic, the slower of it and their FLOPs)
    adapters = max(flops.adapter_bytes / (hw.hbm_gbs * 1e9), flops.adapter_linear / rate) - flops.adapter_linear / rate
    expected = 2 * 4096 * (matmuls / rate + attention * 2048 / 4096 / hw.attention_rate + adapters)
    gemms = tm.gemm_overhead(flops, hw, np.array([2 * 4096.0]), 1, 0)[0]  # (on the rows' 8,192 tokens)
    assert packed.compute[0] == pytest.approx(expected + gemms)
    assert tm.step_tokens(job.training, job.global_batch) == 32 * 4096  # rows of data


@settings(max_examples=25, deadline=None)
@given(mean=st.sampled_from([256, 700, 1500]), extra=st.sampled_from([0, 300, 2000]), mb=st.sampled_from([1, 2, 4]))
def test_packing_never_costs_more_a_token_of_data_than_padding(mean, extra, mb):
    from ftplan.arch import architecture_from_hf

    arch = architecture_from_hf({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2,
                                 "num_attention_heads": 8, "intermediate_size": 704, "vocab_size": 1000})  # fmt: skip
    hw = tm.Hardware(peak_tflops=100.0, efficiency=0.5, hbm_gbs=1000.0, intra_node_gbs=450.0, host_link_gbs=32.0,
                     gpus_per_node=8, network_gbps=None)  # fmt: skip

    def per_token(packing: bool) -> float:
        tr = Training(seq_len=4096, data=SequenceData(mean, mean + extra, packing))
        lay = (np.array([x]) for x in (1, 1, 0, 0, 0, mb, 1))
        return float(tm.step_times(tm.job_flops(arch, tr), arch, tr, hw, *lay).total[0]) / (mb * tr.data_tokens)

    assert per_token(True) <= per_token(False) * (1 + 1e-9)


def test_bad_lengths_are_one_line_errors(catalog):
    with pytest.raises(JobError, match="p95_tokens \\(500\\) is below mean_tokens \\(900\\)"):
        _job(catalog, data={"mean_tokens": 900, "p95_tokens": 500})
    with pytest.raises(JobError, match="exceed seq_len 4,096"):
        _job(catalog, data={"mean_tokens": 900, "p95_tokens": 5000})
    with pytest.raises(JobError, match=r"data\.mean_tokens 900"):
        _job(catalog, samples=1000, tokens=4_096_000, data={"mean_tokens": 900})
    job = _job(catalog, tokens=None, samples=1000, data={"mean_tokens": 900})
    assert job.tokens == 900_000
    assert estimate_job(job).peak_allocated_bytes == estimate_job(_job(catalog)).peak_allocated_bytes


def test_a_plan_of_padded_jobs_verifies(catalog):
    jobs = [BASE | {"id": "sft", "data": {"mean_tokens": 800, "p95_tokens": 3000}},
            BASE | {"id": "packed", "data": {"mean_tokens": 800, "packing": True}}]  # fmt: skip
    pools = [{"id": "lab", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 1, "usd_per_node_h": 8.0}]
    sc = Scenario.model_validate({"jobs": jobs, "pools": pools, "solver": {"time_limit_s": 10, "workers": 1}})
    campaign = resolve_scenario(sc, catalog, "s")
    plan = build_plan(campaign, solve_campaign(campaign))
    assert verify_plan(campaign, plan) == []
    runs = {r.run: r for r in plan.runs}
    assert runs["sft"].tokens_per_s > 0 and runs["packed"].tokens_per_s > 0


def test_a_histogram_gives_a_padded_batchs_longest_sequence_exactly():
    mb = np.array([1, 2, 3])
    data = SequenceData.from_histogram({1000: 3, 3000: 1})  # counts: a quarter of the sequences are 3,000 long
    assert (data.mean, data.p95, data.lengths, data.shares) == (1500, 3000, (1000, 3000), (0.75, 0.25))
    s, span = tm.sequence_lengths(Training(seq_len=4096, data=data), mb)
    # m sequences: all 1,000 long with probability 0.75^m, else padded to 3,000
    short = 0.75**mb
    assert s == pytest.approx(1000 * short + 3000 * (1 - short))
    assert span == pytest.approx((1000**2 * short + 3000**2 * (1 - short)) / s)  # E[longest²] / E[longest]
    packed = Training(seq_len=4096, data=SequenceData.from_histogram({1000: 3, 3000: 1}, packing=True))
    s, span = tm.sequence_lengths(packed, mb)
    # rows of seq_len; a token's document is E[l²] / E[l] long
    assert list(s) == [4096] * 3 and span == pytest.approx([(0.75e6 + 0.25 * 9e6) / 1500] * 3)


def test_a_one_length_histogram_is_every_sequence_that_long():
    mb = np.array([1, 4, 64])
    for packing in (False, True):
        tr = Training(seq_len=4096, data=SequenceData.from_histogram({2048: 7}, packing))
        s, span = tm.sequence_lengths(tr, mb)
        assert list(span) == pytest.approx([2048] * 3)
        assert list(s) == pytest.approx([4096 if packing else 2048] * 3)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(1, 4096), st.floats(0.01, 100.0), min_size=1, max_size=12))
def test_a_padded_batchs_longest_sequence_grows_with_the_batch(histogram):
    data = SequenceData.from_histogram(histogram)
    s, span = tm.sequence_lengths(Training(seq_len=4096, data=data), np.array([1, 2, 4, 16]))
    mean = sum(n * w for n, w in histogram.items()) / sum(histogram.values())
    assert s[0] == pytest.approx(mean)  # one sequence costs its own length
    assert np.all(np.diff(s) >= -1e-9) and s[-1] <= max(histogram) + 1e-9
    assert np.all(span >= s - 1e-9)  # E[longest²] / E[longest] ≥ E[longest]
    assert min(histogram) <= data.p95 <= max(histogram) and abs(data.mean - mean) <= 0.5


def test_a_job_states_its_lengths_as_a_histogram(catalog):
    shares = _job(catalog, data={"lengths": {512: 0.75, 2048: 0.25}})
    counts = _job(catalog, data={"lengths": {"512": 300, "2048": 100}})  # counts, and text keys (JSON)
    assert shares.training.data == counts.training.data
    assert (shares.training.data.mean, shares.training.data.p95) == (896, 2048)
    job = _job(catalog, tokens=None, samples=1000, data={"lengths": {512: 3, 2048: 1}})
    assert job.tokens == 896_000  # samples × the histogram's mean
    pool = [gpu_pool(catalog, "h100", 8, 2.0)]
    fast = fit_job(_job(catalog, data={"lengths": {512: 1}}), pool).layouts
    slow = fit_job(_job(catalog, data={"lengths": {512: 0.9, 4096: 0.1}}), pool).layouts
    assert fast["step_s"].min() < slow["step_s"].min()
    for bad, why in [
        ({"lengths": {512: 1}, "mean_tokens": 500}, "either lengths .a histogram. or mean_tokens"),
        ({"lengths": {}}, "lengths is empty"),
        ({"lengths": {512: 0}}, "length 512 has share 0"),
        ({"lengths": {8192: 1}}, "exceed seq_len 4,096"),
        ({"packing": True}, "give mean_tokens .and p95_tokens., or lengths"),
        ({"lengths": {"long": 1}}, "data.lengths"),
    ]:
        with pytest.raises(JobError, match=why):
            _job(catalog, data=bad)


def test_the_histogram_job_fits_from_the_command_line_and_from_python():
    from pathlib import Path

    from typer.testing import CliRunner

    import ftplan
    from ftplan.cli.app import app

    path = Path(__file__).parents[1] / "scenarios" / "jobs" / "llama-8b-sft-histogram-fit.yaml"
    result = CliRunner().invoke(app, ["fit", str(path), "--gpu", "h100", "--gpus", "8", "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "(mean 986, p95 2,048 tokens of 5 lengths, padded)" in result.output
    job = ftplan.fit(path, gpus=["h100"]).result.job
    assert job.training.data.lengths == (256, 512, 1024, 2048, 4096)
    assert job.tokens == 200_000 * 986  # samples × the histogram's mean (0.25·256 + … + 0.05·4096 = 985.6)

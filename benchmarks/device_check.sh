#!/usr/bin/env bash
# The memory model against a real GPU: run on a machine with a CUDA build of torch, transformers,
# peft and torchao (pip install -e ".[measure]" where a CUDA wheel is available; a case the machine
# cannot run, such as FP8 without torchao, is skipped with its reason). Writes the tables to
# $OUT (or benchmarks/results) with the GPU's name, then times single-GPU steps against the time model
# (benchmarks/step_timing.py); GEMMs of every shape of the H100 table the time model's GEMM constants are
# fitted on, in bf16 and FP8 (precise and fast accumulation), and the MoE models' grouped expert GEMMs
# (benchmarks/gemm_sweep.py); the attention kernels it has (SDPA's flash and cuDNN backends, FlashAttention-2/3
# where installed) by sequence length, forward and backward, beside the time model's rate for each
# (benchmarks/attention_sweep.py); and float8 casts of the dense models' converted weights and inputs beside the
# time model's roofline for them (benchmarks/fp8_cast_sweep.py). About eight minutes on an H100. On a machine
# of two or more GPUs it then runs the multi-process grid (benchmarks/measured_grid_dist.yaml: DDP, ZeRO-1/2/3,
# HSDP, tensor, pipeline, Ulysses and expert parallelism, DeepSpeed's engine) over NCCL, one GPU a rank, as
# `ftplan measure --nproc` (a case needing more GPUs than the machine has, or DeepSpeed where it is not
# installed, is skipped with its reason); on one GPU it says so and skips it: NCCL runs one rank a GPU.
set -euo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  python3 -c "import torchao; print('torchao', torchao.__version__)" 2>/dev/null || echo "torchao missing: the fp8 cases are skipped"
} | tee "$out/device.txt"
python3 benchmarks/measured_accuracy.py --device cuda --keep-dropout --grid benchmarks/measured_grid_cuda.yaml \
  | tee "$out/measured_accuracy_cuda.txt"
python3 benchmarks/measured_accuracy.py --device cuda | tee "$out/measured_accuracy_cuda_cpu_grid.txt"
python3 benchmarks/step_timing.py --steps 5 | tee "$out/step_timing_cuda.txt"
python3 benchmarks/gemm_sweep.py --dtype bf16 -o "$out/gemm_bf16.yaml" | tee "$out/gemm_bf16.txt"
python3 benchmarks/gemm_sweep.py --dtype fp8 -o "$out/gemm_fp8.yaml" | tee "$out/gemm_fp8.txt"
python3 benchmarks/gemm_sweep.py --dtype fp8-fast -o "$out/gemm_fp8_fast.yaml" | tee "$out/gemm_fp8_fast.txt"
python3 benchmarks/gemm_sweep.py --grouped -o "$out/gemm_grouped.yaml" | tee "$out/gemm_grouped.txt"
python3 benchmarks/attention_sweep.py -o "$out/attention.yaml" | tee "$out/attention.txt"
python3 benchmarks/fp8_cast_sweep.py -o "$out/fp8_casts.yaml" | tee "$out/fp8_casts.txt"
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  python3 benchmarks/measured_accuracy.py --device cuda --grid benchmarks/measured_grid_dist.yaml \
    | tee "$out/measured_accuracy_cuda_dist.txt"
else
  echo "skipped benchmarks/measured_grid_dist.yaml: NCCL runs one rank a GPU and this machine has $gpus;" \
    "its cases need 2 to 4" | tee "$out/measured_accuracy_cuda_dist.txt"
fi

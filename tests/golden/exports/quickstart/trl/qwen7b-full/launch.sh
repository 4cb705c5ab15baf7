#!/usr/bin/env bash
# TRL SFT (your script builds SFTConfig, LoraConfig and BitsAndBytesConfig from these files) for run qwen7b-full (job qwen7b-full) on lab-h100: 8 GPUs, nodes lab-h100-node0
# planned: starts at 3.77 h, 2.08 h of training (runs[].start_h, runs[].hours)
# PYTORCH_CUDA_ALLOC_CONF is left unset: the memory model's allocator overhead is the default caching
# allocator's (src/ftplan/memory/overheads.py).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
NODE_RANK=${NODE_RANK:-0}  # this node's index in: lab-h100-node0
TRAIN_SCRIPT=${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}
cd "$HERE" && exec torchrun --standalone --nnodes 1 --nproc-per-node 8 "$TRAIN_SCRIPT" "$@"

#!/usr/bin/env bash
# DeepSpeed launcher for run llama8b-lora (job llama8b-lora) on lab-h100: 8 GPUs, nodes lab-h100-node0
# planned: starts at 0.00 h, 3.76 h of training (runs[].start_h, runs[].hours)
# PYTORCH_CUDA_ALLOC_CONF is left unset: the memory model's allocator overhead is the default caching
# allocator's (src/ftplan/memory/overheads.py).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
NODE_RANK=${NODE_RANK:-0}  # this node's index in: lab-h100-node0
TRAIN_SCRIPT=${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}
exec deepspeed --hostfile "$HERE/hostfile" --num_nodes 1 --num_gpus 8 --master_addr lab-h100-node0 --master_port 29500 "$TRAIN_SCRIPT" --deepspeed "$HERE/ds_config.json" "$@"

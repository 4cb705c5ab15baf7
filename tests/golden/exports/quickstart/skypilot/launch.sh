#!/usr/bin/env bash
# Launch the campaign's cloud runs with SkyPilot at their planned start (after this script starts), each
# after the runs it depends on succeeded (done markers). Spot runs go to managed jobs (sky jobs launch),
# which recover from preemption; on-demand runs to a cluster torn down when the run ends (--down).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DONE=${FTPLAN_DONE:-$HERE/done}; mkdir -p "$DONE"
T0=$(date +%s)
# mistral-qlora-sweep#1: starts at 0.00 h (runs[].start_h)
( sleep $(( T0 + 0 - $(date +%s) > 0 ? T0 + 0 - $(date +%s) : 0 )) && sky launch -y --down -c ftplan-mistral-qlora-sweep-1 "$HERE/mistral-qlora-sweep-1/task.yaml" && touch "$DONE/mistral-qlora-sweep-1" ) &
# mistral-qlora-sweep#2: starts at 0.00 h (runs[].start_h)
( sleep $(( T0 + 0 - $(date +%s) > 0 ? T0 + 0 - $(date +%s) : 0 )) && sky launch -y --down -c ftplan-mistral-qlora-sweep-2 "$HERE/mistral-qlora-sweep-2/task.yaml" && touch "$DONE/mistral-qlora-sweep-2" ) &
# llama8b-lora runs on lab-h100 (owned or bought nodes): export --to slurm
# qwen7b-full runs on lab-h100 (owned or bought nodes): export --to slurm
wait

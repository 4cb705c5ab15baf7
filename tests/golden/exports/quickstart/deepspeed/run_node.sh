#!/usr/bin/env bash
# Usage: run_node.sh NODE (a node id of the plan, e.g. lab-h100-node0), on that node, with TRAIN_SCRIPT set
# and FTPLAN_DONE a directory every node shares. Runs start at their planned time (seconds after the
# campaign's T0, FTPLAN_T0 in epoch seconds, default now), after the runs they depend on wrote done markers.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
NODE=${1:?give this node's id}
DONE=${FTPLAN_DONE:-$HERE/done}; mkdir -p "$DONE"
T0=${FTPLAN_T0:-$(date +%s)}
case "$NODE" in
  lab-h100-node0)
    sleep $(( T0 + 0 - $(date +%s) > 0 ? T0 + 0 - $(date +%s) : 0 ))
    NODE_RANK=0 bash "$HERE/llama8b-lora/launch.sh"
    touch "$DONE/llama8b-lora"
    sleep $(( T0 + 13560 - $(date +%s) > 0 ? T0 + 13560 - $(date +%s) : 0 ))
    NODE_RANK=0 bash "$HERE/qwen7b-full/launch.sh"
    touch "$DONE/qwen7b-full"
    ;;
  p4de-i0)
    sleep $(( T0 + 0 - $(date +%s) > 0 ? T0 + 0 - $(date +%s) : 0 ))
    NODE_RANK=0 bash "$HERE/mistral-qlora-sweep-1/launch.sh"
    touch "$DONE/mistral-qlora-sweep-1"
    ;;
  p4de-i1)
    sleep $(( T0 + 0 - $(date +%s) > 0 ? T0 + 0 - $(date +%s) : 0 ))
    NODE_RANK=0 bash "$HERE/mistral-qlora-sweep-2/launch.sh"
    touch "$DONE/mistral-qlora-sweep-2"
    ;;
  *) echo "no run of the plan uses node $NODE" >&2; exit 2 ;;
esac

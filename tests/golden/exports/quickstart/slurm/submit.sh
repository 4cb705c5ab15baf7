#!/usr/bin/env bash
# Submit the campaign's runs on owned or bought nodes to Slurm, in planned start order.
# Each run starts no earlier than its planned time after this submission (--begin in run.sbatch) and
# after the runs it depends on succeed (--dependency=afterok). Job ids go to jobids.tsv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
: > "$HERE/jobids.tsv"
declare -A ID
ID[llama8b-lora]=$(cd "$HERE/llama8b-lora" && FTPLAN_RUN_DIR="$HERE/llama8b-lora" sbatch --parsable --export=ALL run.sbatch)
printf "%s\t%s\n" llama8b-lora "${ID[llama8b-lora]}" >> "$HERE/jobids.tsv"
ID[qwen7b-full]=$(cd "$HERE/qwen7b-full" && FTPLAN_RUN_DIR="$HERE/qwen7b-full" sbatch --parsable --export=ALL run.sbatch)
printf "%s\t%s\n" qwen7b-full "${ID[qwen7b-full]}" >> "$HERE/jobids.tsv"
# mistral-qlora-sweep#1 runs on cloud pool p4de: export --to skypilot
# mistral-qlora-sweep#2 runs on cloud pool p4de: export --to skypilot
cat "$HERE/jobids.tsv"

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
ID['mistral-qlora-sweep#1']=$(cd "$HERE/mistral-qlora-sweep-1" && FTPLAN_RUN_DIR="$HERE/mistral-qlora-sweep-1" sbatch --parsable --export=ALL run.sbatch)
printf "%s\t%s\n" 'mistral-qlora-sweep#1' "${ID['mistral-qlora-sweep#1']}" >> "$HERE/jobids.tsv"
ID['mistral-qlora-sweep#2']=$(cd "$HERE/mistral-qlora-sweep-2" && FTPLAN_RUN_DIR="$HERE/mistral-qlora-sweep-2" sbatch --parsable --export=ALL run.sbatch)
printf "%s\t%s\n" 'mistral-qlora-sweep#2' "${ID['mistral-qlora-sweep#2']}" >> "$HERE/jobids.tsv"
# qwen7b-full runs on cloud pool p4de: export --to skypilot
cat "$HERE/jobids.tsv"

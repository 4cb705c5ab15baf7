"""Scheduler files: a Slurm batch script per run on owned or bought nodes, a SkyPilot task per cloud run, and the
campaign drivers that submit them (or start launcher runs) at their planned times, after their dependencies."""

from __future__ import annotations

import shlex

import yaml

from ftplan.export.launchers import Files, plan_env, torchrun_line, with_plan_env
from ftplan.export.runs import MASTER_PORT, RunExport


class _LiteralDumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings (a task's ``run``) as literal blocks."""


_LiteralDumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def slurm_files(r: RunExport, margin: float) -> Files:
    """``run.sbatch``: the run's nodes, GPUs, wall time and planned start; one torchrun per node under srun."""
    out = with_plan_env(r)
    minutes = r.time_limit_minutes(margin)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=ftplan-{r.dirname}",
        f"#SBATCH --nodes={r.num_nodes}  # len(runs[].nodes)",
        "#SBATCH --ntasks-per-node=1  # one torchrun per node; it starts the GPU processes",
        f"#SBATCH --gres=gpu:{r.nproc_per_node}  # runs[].gpus: GPUs used on each node",
        f"#SBATCH --nodelist={','.join(r.hostnames)}  # runs[].nodes",
        f"#SBATCH --time={minutes}  # runs[].hours {r.run.hours:.3f} h + {margin:.0%}, whole minutes",
        f"#SBATCH --begin=now+{r.start_minutes()}minutes  # runs[].start_h {r.run.start_h:.2f} h after submission",
        "#SBATCH --output=ftplan-%x-%j.out",
        "# --dependency comes from submit.sh (runs that must finish first, by their Slurm job ids)",
        "set -euo pipefail",
        'HERE="${FTPLAN_RUN_DIR:-$(pwd)}"',
        'source "$HERE/plan.env"',
        "TRAIN_SCRIPT=${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}",
        "export TRAIN_SCRIPT",
        f"srun --kill-on-bad-exit=1 bash -c 'NODE_RANK=$SLURM_NODEID exec {torchrun_line(r)} \"$TRAIN_SCRIPT\"'",
    ]
    out.files["run.sbatch"] = "\n".join(lines) + "\n"
    out.note("run.sbatch", {"--nodes": "len(runs[].nodes)", "--gres": "runs[].gpus", "--nodelist": "runs[].nodes",
                            "--time": f"runs[].hours × (1 + {margin:g})", "--begin": "runs[].start_h",
                            "--dependency": "jobs[].depends_on (submit.sh)"})  # fmt: skip
    return out


def _script(*comment: str) -> list[str]:
    """A driver's first lines: the interpreter, what it does, strict mode and its own directory."""
    return ["#!/usr/bin/env bash", *(f"# {c}" for c in comment), "set -euo pipefail",
            'HERE="$(cd "$(dirname "$0")" && pwd)"']  # fmt: skip


def slurm_driver(runs: list[RunExport], skipped: list[RunExport]) -> str:
    """``submit.sh``: submits every run in start order with its dependencies and records the job ids."""
    lines = _script(
        "Submit the campaign's runs on owned or bought nodes to Slurm, in planned start order.",
        "Each run starts no earlier than its planned time after this submission (--begin in run.sbatch) and",
        "after the runs it depends on succeed (--dependency=afterok). Job ids go to jobids.tsv.",
    )
    lines += [
        ': > "$HERE/jobids.tsv"',
        "declare -A ID",
    ]
    exported = {r.id for r in runs}
    for r in runs:
        deps = [d for d in r.depends_on if d in exported]
        elsewhere = [d for d in r.depends_on if d not in exported]
        if elsewhere:
            lines.append(
                f"# {r.id} also waits for {', '.join(elsewhere)} (cloud: see --to skypilot); its --begin holds"
            )
        dep = ""
        if deps:
            dep = " --dependency=afterok:" + ":".join(f"${{ID[{shlex.quote(d)}]}}" for d in deps)
        lines += [
            f'ID[{shlex.quote(r.id)}]=$(cd "$HERE/{r.dirname}" && FTPLAN_RUN_DIR="$HERE/{r.dirname}" '
            f"sbatch --parsable --export=ALL{dep} run.sbatch)",
            f'printf "%s\\t%s\\n" {shlex.quote(r.id)} "${{ID[{shlex.quote(r.id)}]}}" >> "$HERE/jobids.tsv"',
        ]
    for r in skipped:
        lines.append(f"# {r.id} runs on cloud pool {r.run.pool}: export --to skypilot")
    lines.append('cat "$HERE/jobids.tsv"')
    return "\n".join(lines) + "\n"


def skypilot_task(r: RunExport) -> tuple[dict, dict[str, str]]:
    """A SkyPilot task: the instance type on its cloud, spot or not, the nodes, the planned values and torchrun."""
    assert r.instance is not None
    cloud, _, instance_type = r.instance.partition("/")
    env_text, env_src = plan_env(r)
    envs = {}
    for line in env_text.splitlines():
        if line.startswith("export "):
            key, _, rest = line.removeprefix("export ").partition("=")
            envs[key] = shlex.split(rest.split("  # ", 1)[0])[0]
    envs["TRAIN_SCRIPT"] = "train.py"
    task = {
        "name": f"ftplan-{r.dirname}",
        "num_nodes": r.num_nodes,
        "resources": {
            "cloud": cloud,
            "region": r.region,
            "instance_type": instance_type,
            "use_spot": r.spot,
        },
        "envs": envs,
        "run": (
            "set -euo pipefail\n"
            'MASTER=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\n'
            f"torchrun --nnodes {r.num_nodes} --nproc-per-node {r.nproc_per_node} --node-rank "
            f'"$SKYPILOT_NODE_RANK" --master-addr "$MASTER" --master-port {MASTER_PORT} "$TRAIN_SCRIPT"\n'
        ),
    }
    src = {"resources.cloud, resources.instance_type": "pools[].instance",
           "resources.region": "the catalog's region for pools[].instance (where its price is from)",
           "resources.use_spot": "pools[].pricing",
           "num_nodes": "len(runs[].nodes)", "--nproc-per-node": "runs[].gpu_count / nodes"} | {
               f"envs.{k}": v for k, v in env_src.items()}  # fmt: skip
    return task, src


def skypilot_files(r: RunExport) -> Files:
    out = Files()
    task, src = skypilot_task(r)
    head = (f"# SkyPilot task for run {r.id} (job {r.job.id}) on {r.run.pool}; planned start {r.run.start_h:.2f} h, "
            f"{r.run.hours:.2f} h (see SOURCES.md)\n")  # fmt: skip
    out.files["task.yaml"] = head + yaml.dump(task, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True)
    out.note("task.yaml", src)
    return out


def skypilot_driver(runs: list[RunExport], skipped: list[RunExport]) -> str:
    """``launch.sh``: each cloud run at its planned start, after its dependencies; spot runs as managed jobs."""
    lines = _script(
        "Launch the campaign's cloud runs with SkyPilot at their planned start (after this script starts), each",
        "after the runs it depends on succeeded (done markers). Spot runs go to managed jobs (sky jobs launch),",
        "which recover from preemption; on-demand runs to a cluster torn down when the run ends (--down).",
    )
    lines += [
        'DONE=${FTPLAN_DONE:-$HERE/done}; mkdir -p "$DONE"',
        "T0=$(date +%s)",
    ]
    for r in runs:
        at = r.start_minutes() * 60
        body = [f"sleep $(( T0 + {at} - $(date +%s) > 0 ? T0 + {at} - $(date +%s) : 0 ))"]
        body += [f'until [ -e "$DONE/{d.replace("#", "-")}" ]; do sleep 60; done' for d in r.depends_on]
        if r.spot:
            body.append(f'sky jobs launch -y -n ftplan-{r.dirname} "$HERE/{r.dirname}/task.yaml"')
        else:
            body.append(f'sky launch -y --down -c ftplan-{r.dirname} "$HERE/{r.dirname}/task.yaml"')
        body.append(f'touch "$DONE/{r.dirname}"')
        lines.append(f"# {r.id}: starts at {r.run.start_h:.2f} h (runs[].start_h)")
        lines.append("( " + " && ".join(body) + " ) &")
    for r in skipped:
        lines.append(f"# {r.id} runs on {r.run.pool} (owned or bought nodes): export --to slurm")
    lines.append("wait")
    return "\n".join(lines) + "\n"


def node_driver(runs: list[RunExport]) -> str:
    """``run_node.sh NODE``: on one node of the plan, start each of its runs at the planned time, after the runs
    it depends on have finished (their done markers), with this node's rank in the run."""
    lines = _script(
        "Usage: run_node.sh NODE (a node id of the plan, e.g. lab-h100-node0), on that node, with TRAIN_SCRIPT set",
        "and FTPLAN_DONE a directory every node shares. Runs start at their planned time (seconds after the",
        "campaign's T0, FTPLAN_T0 in epoch seconds, default now), after the runs they depend on wrote done markers.",
    )
    lines += [
        "NODE=${1:?give this node's id}",
        'DONE=${FTPLAN_DONE:-$HERE/done}; mkdir -p "$DONE"',
        "T0=${FTPLAN_T0:-$(date +%s)}",
        'case "$NODE" in',
    ]
    by_node: dict[str, list[tuple[RunExport, int]]] = {}
    for r in runs:
        for rank, host in enumerate(r.hostnames):
            by_node.setdefault(host, []).append((r, rank))
    for host, items in by_node.items():
        lines.append(f"  {host})")
        for r, rank in items:
            at = r.start_minutes() * 60
            lines.append(f"    sleep $(( T0 + {at} - $(date +%s) > 0 ? T0 + {at} - $(date +%s) : 0 ))")
            for d in r.depends_on:
                lines.append(f'    until [ -e "$DONE/{d.replace("#", "-")}" ]; do sleep 30; done')
            lines.append(f'    NODE_RANK={rank} bash "$HERE/{r.dirname}/launch.sh"')
            if rank == 0:
                lines.append(f'    touch "$DONE/{r.dirname}"')
        lines.append("    ;;")
    lines += ['  *) echo "no run of the plan uses node $NODE" >&2; exit 2 ;;', "esac"]
    return "\n".join(lines) + "\n"

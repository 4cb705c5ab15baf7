"""A real Slurm on this machine for the export tests: munge, slurmctld and one slurmd, from Debian's slurm-wlm.

The generated ``slurm.conf`` declares every node of the scenario's owned and bought pools with its GPUs as GRES
counts (so ``sbatch --test-only`` judges each exported script against the nodes it names) and runs one slurmd
as ``real_node``, the node a tiny run really executes on. GPUs are device files under the cluster's directory
(the gres/gpu plugin drops GPUs without files); nothing touches a real GPU.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged")


def unavailable() -> str:
    """Why a real Slurm cannot run here ('' when it can)."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): .ci/run installs Debian's slurm-wlm and munge"
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root (as .ci/run runs)"
    return ""


class SlurmCluster:
    def __init__(self, root: Path, nodes: dict[str, int], real_node: str) -> None:
        """``nodes``: node name → GPUs; ``real_node`` is served by this machine's slurmd."""
        self.root, self.nodes, self.real_node = root, nodes, real_node
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.procs: list[str] = []

    def write_config(self) -> None:
        host = socket.gethostname()
        for d in ("state", "spool", "log", "dev"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        most = max(self.nodes.values())
        for i in range(most):
            (self.root / "dev" / f"gpu{i}").touch()
        lines = [
            "ClusterName=ftplan-test", f"SlurmctldHost={host}", "AuthType=auth/munge", "SlurmUser=root",
            f"StateSaveLocation={self.root}/state", f"SlurmdSpoolDir={self.root}/spool",
            f"SlurmctldPidFile={self.root}/slurmctld.pid", f"SlurmdPidFile={self.root}/slurmd.pid",
            f"SlurmctldLogFile={self.root}/log/slurmctld.log", f"SlurmdLogFile={self.root}/log/slurmd.log",
            "SlurmctldPort=16817", "SlurmdPort=16818", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "ReturnToService=2", "MpiDefault=none", "JobCompType=jobcomp/none", "MinJobAge=600",
            "AccountingStorageType=accounting_storage/none", "GresTypes=gpu",
        ]  # fmt: skip
        gres = []
        cpus = os.cpu_count() or 1
        for name, gpus in self.nodes.items():
            where = f"NodeHostname={host}" if name == self.real_node else "NodeAddr=127.0.0.2"
            lines.append(f"NodeName={name} {where} CPUs={cpus} RealMemory=1000 Gres=gpu:{gpus} State=UNKNOWN")
            last = gpus - 1
            gres.append(f"NodeName={name} Name=gpu File={self.root}/dev/gpu[0-{last}]" if last else
                        f"NodeName={name} Name=gpu File={self.root}/dev/gpu0")  # fmt: skip
        lines.append("PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (self.root / "gres.conf").write_text("\n".join(gres) + "\n")

    def start(self) -> None:
        self.write_config()
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-c"], check=True, env=self.env, capture_output=True)
        subprocess.run(["slurmd", "-N", self.real_node], check=True, env=self.env, capture_output=True)
        self.procs = ["slurmctld", "slurmd"]
        # every node answers through this machine's slurmd (the others' addresses are loopback ones); the
        # scheduler judges a job only against nodes that have answered
        deadline = time.time() + 120
        while time.time() < deadline:
            states = set(self.run("sinfo", "-h", "-N", "-o", "%t").stdout.split())
            if states and states <= {"idle", "mix", "alloc"}:
                return
            time.sleep(1)
        raise RuntimeError(f"the nodes did not come up: {self.log()}")

    def run(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env={**self.env, **(env or {})})

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "UNKNOWN")

    def log(self) -> str:
        logs = [p.read_text()[-2000:] for p in (self.root / "log").glob("*.log")]
        return "\n".join(logs)

    def stop(self) -> None:
        for p in self.procs:
            subprocess.run(["pkill", "-x", p], capture_output=True)

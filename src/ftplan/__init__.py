"""ftplan: plan LLM fine-tuning — memory per GPU, layouts, time, cost and placement.

The library behind the ``ftplan`` command: every command is one of these calls plus rendering.
"""

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.candidates import build_candidates
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.fit import fit_job, gpu_pool, instance_pool, rank
from ftplan.job import estimate_job, resolve_job
from ftplan.measure import measure_job
from ftplan.memory import Layout, LoraSetup, MemoryEstimate, Training, estimate_memory
from ftplan.plan import build_plan, write_plan
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.schema.job import JobSpec, load_job
from ftplan.schema.plan import Plan
from ftplan.schema.scenario import Scenario
from ftplan.solver import solve_campaign
from ftplan.verify import verify_plan

__all__ = [
    "Architecture", "Catalog", "FtplanError", "JobSpec", "Layout", "LoraSetup", "MemoryEstimate", "Plan",
    "Scenario", "Training", "architecture_from_hf", "build_candidates", "build_plan", "estimate_job",
    "estimate_memory", "fit_job", "gpu_pool", "instance_pool", "load_catalog", "load_job", "load_scenario",
    "measure_job", "rank", "resolve_job", "resolve_scenario", "solve_campaign", "verify_plan", "write_plan",
]  # fmt: skip
__version__ = "0.1.0"

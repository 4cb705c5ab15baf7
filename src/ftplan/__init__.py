"""ftplan: plan LLM fine-tuning — memory per GPU, layouts, time, cost and placement.

The library behind the ``ftplan`` command. Its short face (``ftplan.api``): ``memory``, ``fit``,
``plan``, ``check`` and ``replan`` take a file path or a mapping of the same fields and return typed results;
bad input raises :class:`FtplanError` with the command line's message. The building blocks below
them stay importable.
"""

from ftplan.api import Fit, campaign, check, export, fit, job, memory, memory_band, plan, replan
from ftplan.arch import Architecture, architecture_from_hf
from ftplan.bands import HeadroomPolicy, load_bands
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
    "Architecture",
    "Catalog",
    "Fit",
    "FtplanError",
    "HeadroomPolicy",
    "JobSpec",
    "Layout",
    "LoraSetup",
    "MemoryEstimate",
    "Plan",
    "Scenario",
    "Training",
    "architecture_from_hf",
    "build_candidates",
    "build_plan",
    "campaign",
    "check",
    "estimate_job",
    "estimate_memory",
    "export",
    "fit",
    "fit_job",
    "gpu_pool",
    "instance_pool",
    "job",
    "load_bands",
    "load_catalog",
    "load_job",
    "load_scenario",
    "measure_job",
    "memory",
    "memory_band",
    "plan",
    "rank",
    "replan",
    "resolve_job",
    "resolve_scenario",
    "solve_campaign",
    "verify_plan",
    "write_plan",
]  # fmt: skip
__version__ = "0.1.0"

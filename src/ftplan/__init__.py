"""ftplan: plan LLM fine-tuning — memory per GPU, layouts, time, cost and placement."""

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.catalog import Catalog, load_catalog
from ftplan.errors import FtplanError
from ftplan.job import estimate_job, resolve_job
from ftplan.memory import Layout, LoraSetup, MemoryEstimate, Training, estimate_memory
from ftplan.schema.job import JobSpec, load_job

__all__ = [
    "Architecture", "Catalog", "FtplanError", "JobSpec", "Layout", "LoraSetup", "MemoryEstimate", "Training",
    "architecture_from_hf", "estimate_job", "estimate_memory", "load_catalog", "load_job", "resolve_job",
]  # fmt: skip
__version__ = "0.1.0"

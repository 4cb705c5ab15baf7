from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from ftplan.catalog import Catalog, load_catalog

# One CPU thread a test process (before torch loads): pytest-xdist already runs a worker a core, and torch's
# default, a thread a core in every worker, oversubscribes them (tests/test_measure_grid_b.py and
# tests/test_dispatch.py on two cores: 399 s of CPU and 293 s with torch's default, 322 s and 263 s with one)
os.environ.setdefault("OMP_NUM_THREADS", "1")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:  # (its siblings importable, as when it runs)
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """Loads the script ``benchmarks/<name>.py`` as a module."""
    return _load_benchmark


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(user_models=None)


@pytest.fixture(scope="session")
def h100_node():
    """Nodes of 8 H100s as the time model sees them (40% of the dense bf16 peak), with a network of
    ``network_gbps`` per node."""
    from ftplan.timing.model import Hardware

    def make(network_gbps: float = 3200.0) -> Hardware:
        return Hardware(peak_tflops=989, efficiency=0.4, hbm_gbs=3350, intra_node_gbs=450, host_link_gbs=64,
                        gpus_per_node=8, network_gbps=network_gbps)  # fmt: skip

    return make

from __future__ import annotations

import pytest

from ftplan.catalog import Catalog, load_catalog


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

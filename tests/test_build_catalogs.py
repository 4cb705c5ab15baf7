"""``tools/build_catalogs.py`` rebuilds the committed GPU catalog from the team's source data: a maintainer who
reruns it after a source change gets the catalog back with that change alone (the fitted efficiencies, the NVLS
set and the MAMF figures live in the tool). Runs where the source data sit beside the repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SOURCE / "gpus.yaml").exists(), reason="the team's source data are not beside the repo")
def test_the_catalog_builder_reproduces_the_committed_gpu_catalog():
    spec = importlib.util.spec_from_file_location("build_catalogs", ROOT / "tools" / "build_catalogs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    built = tool.build_gpus(SOURCE)
    assert built == yaml.safe_load((ROOT / "catalogs" / "gpus.yaml").read_text())
    gb300 = next(g for g in built["gpus"] if g["id"] == "gb300-288gb")
    assert gb300["mamf_tflops"] == {"bf16": 1965.6, "fp8": 3725.9}  # the B300's fractions of peak, SAME_CHIP

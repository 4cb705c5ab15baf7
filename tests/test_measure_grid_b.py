"""The measured grid's other half (every other case of ``benchmarks/measured_grid.yaml``, from the second): the
checks of tests/test_measure.py, in a file of their own so that two of the suite's workers share the grid."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from test_measure import (  # noqa: F401  (collected here, over this file's cases)
    GRID,
    measured,
    test_each_term_holds_its_recorded_error,
    test_model_states_are_exact,
    test_peak_allocated_within_5_percent,
    test_readme_claims_hold,
    test_saved_activations_within_5_percent,
)

HALF = GRID[1::2]
comparison = pytest.fixture(scope="module", params=HALF, ids=[c["case"] for c in HALF], name="comparison")(measured)

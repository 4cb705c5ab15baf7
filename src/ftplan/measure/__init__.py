"""Measured ground truth: run a job's real training step and hold the estimate to it."""

from ftplan.measure.dist import DistComparison, measure_distributed
from ftplan.measure.run import Comparison, Measurement, Row, estimate_for_device, measure_job

__all__ = ["Comparison", "DistComparison", "Measurement", "Row", "estimate_for_device", "measure_distributed",
           "measure_job"]  # fmt: skip

"""Measured ground truth: run a job's real training step and hold the estimate to it."""

from ftplan.measure.run import Comparison, Measurement, Row, estimate_for_device, measure_job

__all__ = ["Comparison", "Measurement", "Row", "estimate_for_device", "measure_job"]

"""Time and cost model: FLOPs, step time (compute, communication, offload) and job duration."""

from ftplan.timing.model import Hardware, JobFlops, StepTimes, job_flops, peak_tflops, step_times

__all__ = ["Hardware", "JobFlops", "StepTimes", "job_flops", "peak_tflops", "step_times"]

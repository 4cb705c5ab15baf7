"""Catalog rows: GPUs, models and cloud instance types (see ``catalogs/README.md``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tflops(_Row):
    fp32: float | None = Field(None, description="non-tensor FP32 (TFLOP/s, dense)")
    tf32: float | None = Field(None, description="TF32 tensor (TFLOP/s, dense)")
    bf16: float | None = Field(None, description="BF16 tensor, FP32 accumulate (TFLOP/s, dense)")
    fp16: float | None = Field(None, description="FP16 tensor, FP32 accumulate (TFLOP/s, dense)")
    fp8: float | None = Field(None, description="FP8 tensor (TFLOP/s, dense)")


class Gpu(_Row):
    id: str = Field(description="catalog id, e.g. h100-sxm-80gb")
    name: str = Field(description="name in the source data")
    aliases: list[str] = Field(default_factory=list, description="other names accepted on input")
    vendor: str | None = None
    arch: str = Field("", description="architecture (hopper, ampere, ...)")
    memory_mib: int = Field(gt=0, description="device memory the driver reports (MiB)")
    memory_note: str = ""
    tflops: Tflops
    hbm_gbs: float | None = Field(None, description="device memory bandwidth (GB/s)")
    intra_node_gbs: float | None = Field(None, description="per-GPU GPU-to-GPU bandwidth, unidirectional (GB/s)")
    intra_node_link: str | None = None
    host_link_gbs: float | None = Field(None, description="host link (PCIe x16) unidirectional (GB/s)")
    efficiency: float | None = Field(
        None, gt=0, le=1, description="large GEMMs' achieved fraction of dense peak (hardware FLOPs; fixed costs apart)"
    )
    attention_efficiency: float | None = Field(
        None, gt=0, le=1, description="the attention core's achieved fraction of dense peak (hardware FLOPs)"
    )
    efficiency_source: str | None = None
    max_gpus_per_node: int = Field(8, gt=0, description="GPUs in the largest common server")
    nvlink_domain: int | None = Field(
        None, gt=0, description="GPUs on one NVLink domain when it spans nodes (GB200 NVL72: 72)"
    )
    nvls: bool = Field(
        False, description="NVLink SHARP: the NVSwitches reduce an all-reduce in the NVLink domain (NVSwitch gen 3+)"
    )
    mamf_tflops: dict[str, float] | None = Field(
        None, description="maximum achievable matmul TFLOP/s measured per dtype (bf16, fp8)"
    )
    bf16: bool = Field(True, description="whether the GPU computes in bf16")
    purchase_usd_per_gpu: float | None = Field(None, description="approximate purchase price per GPU (USD)")
    purchase_date: str | None = None
    purchase_source: str | None = None
    confidence: str | None = None
    sources: list[str] = Field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def fp8_matmul_ratio(self) -> float | None:
        """FP8 matmuls' fraction of peak over bf16 matmuls' (from ``mamf_tflops``), None if unmeasured."""
        m, t = self.mamf_tflops or {}, self.tflops
        if not (m.get("fp8") and m.get("bf16") and t.fp8 and t.bf16):
            return None
        return (m["fp8"] / t.fp8) / (m["bf16"] / t.bf16)


class ModelEntry(_Row):
    id: str = Field(description="catalog id, e.g. llama-3.1-8b")
    hf_repo: str | None = Field(None, description="Hugging Face repository the config comes from")
    params_official: float | None = Field(None, description="official parameter count")
    params_active_official: float | None = Field(None, description="official active parameters (MoE)")
    source: str = Field("", description="where the config was read")
    config: dict[str, Any] = Field(description="config.json fields, Hugging Face names")


class Instance(_Row):
    cloud: str
    region: str
    instance_type: str
    gpu: str = Field(description="catalog GPU id")
    gpus_per_node: int = Field(gt=0)
    vcpus: float
    host_memory_gib: float | None = Field(None, description="host RAM (GiB); empty where unknown")
    on_demand_usd_per_h: float | None = Field(None, description="on-demand price per instance-hour (USD)")
    spot_usd_per_h: float | None = Field(None, description="spot price per instance-hour (USD)")
    source: str
    as_of: str
    network_gbps: float | None = Field(None, gt=0, description="scale-out network per node (Gbps); empty: one node")
    network_source: str = ""
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.cloud}/{self.instance_type}"

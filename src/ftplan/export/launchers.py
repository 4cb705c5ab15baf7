"""Launcher files for one planned run: DeepSpeed's JSON, accelerate's YAML, TRL's SFT config, torchrun's lines.

Each builder returns ``{file name: text}`` for the run's directory plus ``sources``: every field it wrote and
the plan (or scenario) field it came from, which the exporter writes to the run's ``SOURCES.md`` (JSON holds no
comments). What a format cannot express is refused in one line naming the run and the format that can.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

import yaml

from ftplan.arch import Architecture
from ftplan.errors import FtplanError
from ftplan.export.runs import MASTER_PORT, RunExport
from ftplan.memory.deepspeed import SETTING_REASONS, extra_bytes, zero_settings
from ftplan.memory.setup import Engine, Kernels, Precision
from ftplan.schema.job import Fp8Spec, LoraSpec
from ftplan.units import GIB

# TrainingArguments.optim for each optimizer kernel (transformers' OptimizerNames). adamw-forloop has none:
# adamw_torch is the foreach kernel, whose step temporaries are larger than what was planned, so it is refused.
HF_OPTIM = {
    "adamw": "adamw_torch",
    "adamw-fused": "adamw_torch_fused",
    "adamw-8bit": "adamw_bnb_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
    "paged-adamw": "paged_adamw_32bit",
    "paged-adamw-8bit": "paged_adamw_8bit",
}
# Precisions the Hugging Face stack (Trainer, accelerate, DeepSpeed) runs as planned: autocast over fp32
# weights, or fp32 throughout. bf16-pure (no fp32 master copy) and FP8 training are torchtune's, lit-gpt's and
# torchtitan's recipes.
HF_PRECISIONS = {"fp32": "no", "bf16-mixed": "bf16", "fp16-mixed": "fp16"}


@dataclass
class Files:
    """A run's generated files and where each field came from."""

    files: dict[str, str] = field(default_factory=dict)
    sources: list[tuple[str, str, str]] = field(default_factory=list)  # (file, field, plan field)

    def note(self, file: str, pairs: dict[str, str]) -> None:
        self.sources += [(file, k, v) for k, v in pairs.items()]


def _refuse(r: RunExport, fmt: str, why: str, instead: str = "torchrun") -> FtplanError:
    return FtplanError(f"run {r.id}: {why}, which --to {fmt} cannot express. To fix: export --to {instead}")


def check_hf(r: RunExport, fmt: str) -> None:
    """What the Hugging Face stack cannot run as planned: refused, never approximated."""
    lay = r.layout
    for name, value in (("tp", lay.tp), ("pp", lay.pp), ("cp", lay.cp), ("ep", lay.ep)):
        if value > 1:
            raise _refuse(r, fmt, f"the plan runs it with {name} {value}")
    if lay.dp_shard:
        raise _refuse(r, fmt, f"the plan shards its states over groups of {lay.dp_shard} ranks (HSDP)")
    if lay.precision not in HF_PRECISIONS:
        raise _refuse(r, fmt, f"the plan trains it in {lay.precision}")
    if lay.optimizer not in HF_OPTIM:
        raise _refuse(r, fmt, f"the plan steps it with {lay.optimizer} (no Trainer optimizer matches its memory)")


def deepspeed_config(r: RunExport) -> tuple[dict, dict[str, str]]:
    """DeepSpeed's JSON config (its Hugging Face integration's form: optimizer hyperparameters ``auto``), refused
    where DeepSpeed's own buffers would not fit the run's headroom."""
    lay = r.layout
    cfg, src = deepspeed_json(r.arch, lay.micro_batch, lay.grad_accum, lay.dp, lay.zero, lay.offload, lay.precision)
    extra = sum(extra_bytes(r.arch, r.trainable_params, Precision(lay.precision), lay.zero, lay.dp).values())
    if extra and r.job.engine is Engine.DEEPSPEED:
        src["zero_optimization (memory)"] = (
            f"DeepSpeed's ZeRO-3 partitions and reduce bucket ({extra / GIB:.2f} GiB a GPU) are in the plan's "
            "estimate (jobs[].engine deepspeed)"
        )
    elif extra > r.run.headroom_bytes:
        raise FtplanError(
            f"run {r.id}: DeepSpeed's ZeRO-3 holds {extra / GIB:.2f} GiB a GPU more than the plan's estimate (16-bit "
            f"parameter and gradient partitions, a reduce bucket) and the run has {r.run.headroom_bytes / GIB:.2f} "
            "GiB of headroom. To fix: export --to accelerate (FSDP2, as planned), or plan the job with engine "
            "deepspeed"
        )
    elif extra:
        src["zero_optimization (memory)"] = (
            f"DeepSpeed's ZeRO-3 holds {extra / GIB:.2f} GiB a GPU beyond the plan's estimate (16-bit parameter and "
            f"gradient partitions, a reduce bucket), within the run's {r.run.headroom_bytes / GIB:.2f} GiB headroom; "
            "plan the job with engine deepspeed to count them"
        )
    return cfg, src


def deepspeed_json(
    arch: Architecture, micro_batch: int, grad_accum: int, dp: int, zero: int, offload: str, precision: str
) -> tuple[dict, dict[str, str]]:
    """DeepSpeed's JSON config of a layout, and the plan field each value came from: what ``--to deepspeed``
    writes and what ``ftplan measure --engine deepspeed`` runs."""
    cfg: dict = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * dp,
        "zero_optimization": {"stage": zero},
    }
    src = {
        "train_micro_batch_size_per_gpu": "runs[].layout.micro_batch",
        "gradient_accumulation_steps": "runs[].layout.grad_accum",
        "train_batch_size": "runs[].layout.micro_batch × grad_accum × dp",
        "zero_optimization.stage": "runs[].layout.zero",
    }
    zero_cfg = cfg["zero_optimization"]
    if offload in ("optimizer", "optimizer+params"):
        zero_cfg["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        src["zero_optimization.offload_optimizer"] = "runs[].layout.offload"
        # ZeRO-Offload steps on the host with DeepSpeed's CPU Adam (its Hugging Face integration fills ``auto``)
        cfg["optimizer"] = {"type": "AdamW", "params": {k: "auto" for k in ("lr", "betas", "eps", "weight_decay")}}
        src["optimizer.type"] = "runs[].layout.offload (the host steps AdamW)"
    if offload == "optimizer+params":
        zero_cfg["offload_param"] = {"device": "cpu", "pin_memory": True}
        src["zero_optimization.offload_param"] = "runs[].layout.offload"
    if zero > 0:
        # DeepSpeed's buckets are absolute element counts (a 1 GB reduce bucket by default): written in the
        # estimate's unit instead, the model's largest transformer block (ftplan.memory.deepspeed)
        sizes = zero_settings(arch, zero)
        zero_cfg |= sizes
        src |= {f"zero_optimization.{key}": SETTING_REASONS[key] for key in sizes}
    if precision == "bf16-mixed":
        cfg["bf16"] = {"enabled": True}
        src["bf16.enabled"] = "runs[].layout.precision"
    elif precision == "fp16-mixed":
        cfg["fp16"] = {"enabled": True}
        src["fp16.enabled"] = "runs[].layout.precision"
    return cfg, src


def _launch_header(r: RunExport, what: str) -> list[str]:
    nodes = " ".join(r.hostnames)
    return [
        "#!/usr/bin/env bash",
        f"# {what} for run {r.id} (job {r.job.id}) on {r.run.pool}: {r.run.gpu_count} GPUs, nodes {nodes}",
        f"# planned: starts at {r.run.start_h:.2f} h, {r.run.hours:.2f} h of training (runs[].start_h, runs[].hours)",
        "# PYTORCH_CUDA_ALLOC_CONF is left unset: the memory model's allocator overhead is the default caching",
        "# allocator's (src/ftplan/memory/overheads.py).",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "$0")" && pwd)"',
        f"NODE_RANK=${{NODE_RANK:-0}}  # this node's index in: {nodes}",
        "TRAIN_SCRIPT=${TRAIN_SCRIPT:?set TRAIN_SCRIPT to your training script}",
    ]


def torchrun_line(r: RunExport) -> str:
    """torchrun's arguments for this run (rendezvous at the first node of the plan)."""
    if r.num_nodes == 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {r.nproc_per_node}"
    return (
        f'torchrun --nnodes {r.num_nodes} --nproc-per-node {r.nproc_per_node} --node-rank "$NODE_RANK" '
        f"--rdzv-backend c10d --rdzv-endpoint {r.hostnames[0]}:{MASTER_PORT} --rdzv-id {shlex.quote(r.dirname)}"
    )


GLOBAL_BATCH = "runs[].layout: micro_batch × grad_accum × dp"


def plan_env(r: RunExport) -> tuple[str, dict[str, str]]:
    """Every planned value as an environment variable a training script (torchtitan, Megatron, your own) reads."""
    lay, job = r.layout, r.job
    values = {
        "FTPLAN_RUN": (r.id, "runs[].run"),
        "FTPLAN_MODEL": (job.model or "inline architecture", "jobs[].model"),
        "FTPLAN_METHOD": (job.method.value, "jobs[].method"),
        "FTPLAN_SEQ_LEN": (job.seq_len, "jobs[].seq_len"),
        "FTPLAN_GLOBAL_BATCH": (lay.micro_batch * lay.grad_accum * lay.dp, GLOBAL_BATCH),
        "FTPLAN_MICRO_BATCH": (lay.micro_batch, "runs[].layout.micro_batch"),
        "FTPLAN_GRAD_ACCUM": (lay.grad_accum, "runs[].layout.grad_accum"),
        "FTPLAN_DP": (lay.dp, "runs[].layout.dp"),
        "FTPLAN_TP": (lay.tp, "runs[].layout.tp"),
        "FTPLAN_SEQUENCE_PARALLEL": (job.sequence_parallel.value, "jobs[].sequence_parallel"),
        "FTPLAN_PP": (lay.pp, "runs[].layout.pp"),
        "FTPLAN_PP_SCHEDULE": (lay.pp_schedule, "runs[].layout.pp_schedule"),
        "FTPLAN_CP": (lay.cp, "runs[].layout.cp"),
        "FTPLAN_CONTEXT_PARALLEL": (job.context_parallel.value, "jobs[].context_parallel"),
        "FTPLAN_EP": (lay.ep, "runs[].layout.ep"),
        "FTPLAN_ZERO": (lay.zero, "runs[].layout.zero"),
        "FTPLAN_DP_SHARD": (lay.dp_shard or lay.dp, "runs[].layout.dp_shard (0: all of dp)"),
        "FTPLAN_OFFLOAD": (lay.offload, "runs[].layout.offload"),
        "FTPLAN_RECOMPUTE": (lay.recompute, "runs[].layout.recompute"),
        "FTPLAN_OPTIMIZER": (lay.optimizer, "runs[].layout.optimizer"),
        "FTPLAN_PRECISION": (lay.precision, "runs[].layout.precision"),
        "FTPLAN_KERNELS": (job.kernels.value, "jobs[].kernels (fused: the planned hours assume compiled kernels)"),
        "FTPLAN_ATTENTION_KERNEL": (
            job.attention_kernel.value,
            "jobs[].attention_kernel (flash2 | cudnn | flash3 | flex: the kernel the hours assume)",
        ),
        "FTPLAN_TP_OVERLAP": (
            int(job.tp_overlap),
            "jobs[].tp_overlap (1: the hours assume tensor parallelism's collectives overlapped: torchtitan's "
            "parallelism.enable_async_tensor_parallel, Megatron's --tp-comm-overlap)",
        ),
        "FTPLAN_PARAM_GATHER_OVERLAP": (
            int(job.param_gather_overlap),
            "jobs[].param_gather_overlap (1: the hours assume ZeRO-1's all-gather hidden in the next forward: "
            "Megatron's --overlap-param-gather)",
        ),
    }  # fmt: skip
    if lay.pp > 1:
        values["FTPLAN_PIPELINE_SPLIT"] = (
            job.pipeline_split.value,
            "jobs[].pipeline_split (even | weighted: how the hours and memory assume the layers are cut into stages; "
            "weighted: torchtitan's pipeline_parallel_first/last_stage_less_layers 1, Megatron's "
            "account_for_embedding/loss_in_pipeline_split)",
        )
    if lay.ep > 1:
        values["FTPLAN_EXPERT_DISPATCH"] = (
            job.expert_dispatch.value,
            "jobs[].expert_dispatch (alltoall | deepep: how the hours and memory assume experts get their tokens)",
        )
    if lay.precision == "fp8":
        fp8 = job.fp8 or Fp8Spec()
        values |= {
            "FTPLAN_FP8_RECIPE": (fp8.recipe.value, "jobs[].fp8.recipe"),
            "FTPLAN_FP8_ALL_GATHER": (int(fp8.all_gather), "jobs[].fp8.all_gather (1: ZeRO-3 gathers weights in FP8)"),
            "FTPLAN_FP8_WEIGHT_CACHE": (
                int(fp8.weight_cache),
                "jobs[].fp8.weight_cache (1: the hours and memory assume weights cast once a step and cached: "
                "Transformer Engine given is_first_microbatch, as Megatron-Core passes it)",
            ),
        }
    if job.lora is not None or job.method.value != "full":
        lora = job.lora or LoraSpec()
        values |= {
            "FTPLAN_LORA_RANK": (lora.rank, "jobs[].lora.rank"),
            "FTPLAN_LORA_ALPHA": (lora.alpha, "jobs[].lora.alpha"),
            "FTPLAN_LORA_TARGETS": (",".join(r.lora_targets), "jobs[].lora.target_modules (default: attention)"),
        }
    lines = [f"# planned values of run {r.id}; each line names the plan field it came from"]
    lines += [f"export {k}={shlex.quote(str(v))}  # {s}" for k, (v, s) in values.items()]
    return "\n".join(lines) + "\n", {k: s for k, (_, s) in values.items()}


def with_plan_env(r: RunExport) -> Files:
    """A run's files start with ``plan.env``: every planned value (recomputation, degrees, ...) for its script."""
    out = Files()
    env, src = plan_env(r)
    out.files["plan.env"] = env
    out.note("plan.env", src)
    return out


def torchrun_files(r: RunExport) -> Files:
    out = with_plan_env(r)
    lines = _launch_header(r, "torchrun")
    lines += [f'exec {torchrun_line(r)} "$TRAIN_SCRIPT" "$@"']
    out.files["launch.sh"] = "\n".join(lines) + "\n"
    out.note("launch.sh", {"--nnodes": "len(runs[].nodes)", "--nproc-per-node": "runs[].gpu_count / nodes",
                           "--rdzv-endpoint": "runs[].nodes[0]"})  # fmt: skip
    return out


def deepspeed_files(r: RunExport) -> Files:
    check_hf(r, "deepspeed")
    out = with_plan_env(r)
    cfg, src = deepspeed_config(r)
    out.files["ds_config.json"] = json.dumps(cfg, indent=2) + "\n"
    out.note("ds_config.json", src)
    out.files["hostfile"] = "".join(f"{h} slots={r.nproc_per_node}\n" for h in r.hostnames)
    out.note("hostfile", {"host slots": "runs[].nodes, runs[].gpus"})
    lines = _launch_header(r, "DeepSpeed launcher")
    lines.append(
        f'exec deepspeed --hostfile "$HERE/hostfile" --num_nodes {r.num_nodes} --num_gpus {r.nproc_per_node} '
        f'--master_addr {r.hostnames[0]} --master_port {MASTER_PORT} "$TRAIN_SCRIPT" '
        f'--deepspeed "$HERE/ds_config.json" "$@"'
    )
    out.files["launch.sh"] = "\n".join(lines) + "\n"
    return out


def accelerate_config(r: RunExport) -> tuple[dict, dict[str, str], bool]:
    """accelerate's config: FSDP2 for ZeRO-2/3 (offloading all or nothing), its DeepSpeed plugin for ZeRO-1,
    an optimizer-only offload or a job planned with engine deepspeed, DDP otherwise. Returns the config, the
    sources and whether it uses DeepSpeed."""
    check_hf(r, "accelerate")
    lay = r.layout
    cfg: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "mixed_precision": HF_PRECISIONS[lay.precision],
        "num_machines": r.num_nodes,
        "num_processes": r.run.gpu_count,
        "machine_rank": 0,
        "main_process_ip": r.hostnames[0],
        "main_process_port": MASTER_PORT,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "gpu_ids": "all",
    }
    src = {
        "mixed_precision": "runs[].layout.precision", "num_machines": "len(runs[].nodes)",
        "num_processes": "runs[].gpu_count", "main_process_ip": "runs[].nodes[0]",
        "machine_rank": "0 here; launch.sh passes --machine_rank $NODE_RANK",
    }  # fmt: skip
    # (a job planned for DeepSpeed's engine runs it at every ZeRO stage)
    uses_ds = lay.zero == 1 or lay.offload == "optimizer" or (lay.zero >= 1 and r.job.engine is Engine.DEEPSPEED)
    if uses_ds:
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"deepspeed_config_file": "ds_config.json", "zero3_init_flag": lay.zero == 3}
        src["deepspeed_config"] = "runs[].layout.zero, runs[].layout.offload, jobs[].engine (ds_config.json)"
    elif lay.zero >= 2:
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_reshard_after_forward": lay.zero == 3,
            "fsdp_offload_params": lay.offload == "optimizer+params",
            "fsdp_activation_checkpointing": lay.recompute != "none",
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": True,
        }
        src |= {
            "fsdp_config.fsdp_reshard_after_forward": "runs[].layout.zero (3: reshard, 2: keep)",
            "fsdp_config.fsdp_offload_params": "runs[].layout.offload",
            "fsdp_config.fsdp_activation_checkpointing": "runs[].layout.recompute",
        }
    else:
        cfg["distributed_type"] = "MULTI_GPU" if r.run.gpu_count > 1 else "NO"
        src["distributed_type"] = "runs[].gpu_count, runs[].layout.zero 0"
    if r.job.kernels is Kernels.FUSED:  # the planned hours assume compiled kernels: torch.compile by inductor
        cfg["dynamo_config"] = {"dynamo_backend": "INDUCTOR"}
        src["dynamo_config.dynamo_backend"] = "jobs[].kernels fused"
    return cfg, src, uses_ds


def accelerate_files(r: RunExport) -> Files:
    out = with_plan_env(r)
    cfg, src, uses_ds = accelerate_config(r)
    out.files["accelerate_config.yaml"] = _yaml(cfg, f"accelerate config of run {r.id} (see SOURCES.md)")
    out.note("accelerate_config.yaml", src)
    if uses_ds:
        ds, ds_src = deepspeed_config(r)
        out.files["ds_config.json"] = json.dumps(ds, indent=2) + "\n"
        out.note("ds_config.json", ds_src)
    lines = _launch_header(r, "accelerate")
    lines.append(
        'exec accelerate launch --config_file "$HERE/accelerate_config.yaml" --machine_rank "$NODE_RANK" '
        '"$TRAIN_SCRIPT" "$@"'
    )
    out.files["launch.sh"] = "\n".join(lines) + "\n"
    return out


def training_arguments(r: RunExport) -> tuple[dict, dict[str, str]]:
    """transformers' ``TrainingArguments`` fields the plan decides (TRL's ``SFTConfig`` extends them)."""
    check_hf(r, "trl")
    lay = r.layout
    args: dict = {
        "per_device_train_batch_size": lay.micro_batch,
        "gradient_accumulation_steps": lay.grad_accum,
        # selective recomputation has no Trainer switch: full recomputation keeps less, never more
        "gradient_checkpointing": lay.recompute != "none",
        "optim": HF_OPTIM[lay.optimizer],
        "bf16": lay.precision == "bf16-mixed",
        "fp16": lay.precision == "fp16-mixed",
    }
    src = {
        "per_device_train_batch_size": "runs[].layout.micro_batch",
        "gradient_accumulation_steps": "runs[].layout.grad_accum",
        "gradient_checkpointing": "runs[].layout.recompute (selective → full: less memory, more time)",
        "optim": "runs[].layout.optimizer",
        "bf16": "runs[].layout.precision", "fp16": "runs[].layout.precision",
    }  # fmt: skip
    if lay.zero >= 1:
        args["deepspeed"] = "ds_config.json"
        src["deepspeed"] = "runs[].layout.zero, runs[].layout.offload (ds_config.json)"
    if r.job.kernels is Kernels.FUSED:  # the planned hours assume compiled kernels
        args["torch_compile"] = True
        src["torch_compile"] = "jobs[].kernels fused"
    return args, src


def sft_config(r: RunExport) -> tuple[dict, dict[str, str]]:
    """TRL's ``SFTConfig``: the training arguments plus the sequence length and packing."""
    args, src = training_arguments(r)
    job = r.job
    args["max_length"] = job.seq_len
    src["max_length"] = "jobs[].seq_len"
    # without a data block every sequence is seq_len tokens: full rows, which SFT data reaches by packing,
    # unless the job pads (attention_mask: padded)
    args["packing"] = bool(job.data.packing) if job.data else job.attention_mask.value == "none"
    src["packing"] = "jobs[].data.packing (no data block: jobs[].attention_mask none → packed rows of seq_len)"
    return args, src


def lora_config(r: RunExport) -> tuple[dict, dict[str, str]] | None:
    """PEFT's ``LoraConfig`` fields (None for full fine-tuning)."""
    job = r.job
    if job.method.value == "full":
        return None
    lora = job.lora or LoraSpec()
    alpha = int(lora.alpha) if float(lora.alpha).is_integer() else lora.alpha
    cfg: dict = {"r": lora.rank, "lora_alpha": alpha, "lora_dropout": lora.dropout, "task_type": "CAUSAL_LM"}
    src = {"r": "jobs[].lora.rank", "lora_alpha": "jobs[].lora.alpha", "lora_dropout": "jobs[].lora.dropout"}
    targets = list(r.lora_targets)
    cfg["target_modules"] = "all-linear" if targets == ["all-linear"] else targets
    src["target_modules"] = "jobs[].lora.target_modules (default: the model's attention projections, as planned)"
    if lora.modules_to_save:
        cfg["modules_to_save"] = list(lora.modules_to_save)
        src["modules_to_save"] = "jobs[].lora.modules_to_save"
    if lora.target_parameters:
        cfg["target_parameters"] = list(lora.target_parameters)
        src["target_parameters"] = "jobs[].lora.target_parameters"
    return cfg, src


def bnb_config(r: RunExport) -> tuple[dict, dict[str, str]] | None:
    """transformers' ``BitsAndBytesConfig`` for QLoRA (NF4, as the memory model quantises)."""
    if r.job.method.value != "qlora":
        return None
    lora = r.job.lora or LoraSpec()
    compute = {"bf16-mixed": "bfloat16", "fp16-mixed": "float16"}.get(r.layout.precision, "float32")
    cfg = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": lora.double_quant,
           "bnb_4bit_compute_dtype": compute}  # fmt: skip
    return cfg, {"load_in_4bit": "jobs[].method qlora", "bnb_4bit_use_double_quant": "jobs[].lora.double_quant",
                 "bnb_4bit_compute_dtype": "runs[].layout.precision"}  # fmt: skip


def trl_files(r: RunExport) -> Files:
    out = with_plan_env(r)
    args, src = sft_config(r)
    out.files["sft_config.json"] = json.dumps(args, indent=2) + "\n"
    out.note("sft_config.json", src)
    if r.layout.zero >= 1:
        ds, ds_src = deepspeed_config(r)
        out.files["ds_config.json"] = json.dumps(ds, indent=2) + "\n"
        out.note("ds_config.json", ds_src)
    for name, built in (("lora_config.json", lora_config(r)), ("bnb_config.json", bnb_config(r))):
        if built is not None:
            out.files[name] = json.dumps(built[0], indent=2) + "\n"
            out.note(name, built[1])
    lines = _launch_header(
        r, "TRL SFT (your script builds SFTConfig, LoraConfig and BitsAndBytesConfig from these files)"
    )
    lines.append(f'cd "$HERE" && exec {torchrun_line(r)} "$TRAIN_SCRIPT" "$@"')
    out.files["launch.sh"] = "\n".join(lines) + "\n"
    return out


def _yaml(data: dict, comment: str) -> str:
    return f"# {comment}\n" + yaml.safe_dump(data, sort_keys=False)

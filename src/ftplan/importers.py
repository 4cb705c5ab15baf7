"""`ftplan import`: a job file from a config a user already has (axolotl, torchtune, TRL/TrainingArguments,
DeepSpeed).

Every field ftplan models is mapped; every other field is listed as ignored (never silently dropped); a mapped
field with a value ftplan does not know is a one-line error naming the file, the field and the fix. What the
configs do not say (how many GPUs, the base model of a DeepSpeed config) comes from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftplan.catalog import Catalog
from ftplan.errors import JobError
from ftplan.export.launchers import HF_OPTIM
from ftplan.io import read_json, read_yaml

FORMATS = ("axolotl", "torchtune", "trl", "deepspeed")

# optimizer names (transformers' OptimizerNames, which axolotl and TRL use) → ftplan's kernels: the names the
# TRL export writes, read back, and bitsandbytes' alias
HF_OPTIMIZERS = {name: kernel for kernel, name in HF_OPTIM.items()} | {"adamw_8bit": "adamw-8bit"}
# torchtune optimizer components → kernels (torch.optim.AdamW's own flags decide fused or for-loop)
TUNE_OPTIMIZERS = {
    "bitsandbytes.optim.PagedAdamW8bit": "paged-adamw-8bit", "bitsandbytes.optim.PagedAdamW": "paged-adamw",
    "bitsandbytes.optim.AdamW8bit": "adamw-8bit", "torch.optim.SGD": "sgd",
}  # fmt: skip
# torchtune's model builders (torchtune.models.<family>.<builder>) → catalog ids
TUNE_MODELS = {
    "llama2_7b": "llama-2-7b", "llama2_13b": "llama-2-13b", "llama2_70b": "llama-2-70b",
    "llama3_8b": "llama-3-8b", "llama3_70b": "llama-3-70b", "llama3_1_8b": "llama-3.1-8b",
    "llama3_1_70b": "llama-3.1-70b", "llama3_1_405b": "llama-3.1-405b", "llama3_2_1b": "llama-3.2-1b",
    "llama3_2_3b": "llama-3.2-3b", "qwen2_5_7b_base": "qwen2.5-7b", "qwen2_5_7b_instruct": "qwen2.5-7b",
    "mistral_7b": "mistral-7b-v0.1",
}  # fmt: skip
# torchtune's names of the attention projections → Hugging Face's (the memory model's linears)
TUNE_ATTENTION = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}


@dataclass
class Imported:
    """A job mapped from a config: its fields, what was mapped from where, and what was ignored."""

    source: str
    fmt: str
    job: dict[str, Any] = field(default_factory=dict)
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (config field, job field)
    ignored: list[str] = field(default_factory=list)  # top-level fields ftplan does not model
    read: list[str] = field(default_factory=list)  # top-level fields it read (mapped, or checked and unset)
    notes: list[str] = field(default_factory=list)  # what the user should know of how the job is modelled

    def set(self, config_field: str, job_field: str, value: Any) -> None:
        """Set ``job_field`` (dotted for nested: ``layout.zero``) from ``config_field``."""
        target = self.job
        *parents, last = job_field.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
        self.mapped.append((config_field, job_field))

    def to_yaml(self) -> str:
        head = [f"# job imported by `ftplan import {self.fmt}` from {self.source}", "# mapped:"]
        head += [f"#   {c} → {j}" for c, j in self.mapped]
        if self.ignored:
            head.append("# ignored (not modelled): " + ", ".join(self.ignored))
        head += [f"# note: {n}" for n in self.notes]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.job, sort_keys=False)


def _bad(out: Imported, key: str, value: Any, fix: str) -> JobError:
    return JobError(f"{out.source}: field '{key}': {value!r} is not something ftplan models. To fix: {fix}")


# DeepSpeed configs written for transformers' Trainer leave their batch fields to it ("auto"): the Trainer fills
# them in at launch from its own arguments (transformers' DeepSpeed integration, ``HfTrainerDeepSpeedConfig``)
AUTO_FIX = (
    "'auto' is filled in at launch from the trainer's arguments; give the number, or import the trainer's config "
    "(`ftplan import trl`)"
)


def _whole(out: Imported, key: str, value: Any) -> int:
    """A count from a config: a whole number (2048 or 2048.0), never a boolean, a fraction or a word."""
    if value is None:
        raise JobError(f"{out.source}: field '{key}' is missing. To fix: give it as a whole number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(out, key, value, AUTO_FIX if value == "auto" else "give a whole number")
    return value


def _block(out: Imported, key: str, value: Any) -> dict:
    """A nested block of a config (absent: empty); anything but a mapping is one line."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(out, key, value, "give a mapping of its fields")
    return value


def _names(out: Imported, key: str, value: Any) -> list[str]:
    """A list of module names from a config."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(out, key, value, "give a list of module names")
    return list(value)


def _model(out: Imported, key: str, name: str, catalog: Catalog) -> str:
    """A catalog id from a catalog id or a Hugging Face repository name."""
    if name in catalog.models:
        return name
    for mid, entry in catalog.models.items():
        if entry.hf_repo and entry.hf_repo.lower() == name.lower():
            return mid
    raise JobError(
        f"{out.source}: field '{key}': model {name!r} is not in the catalog. To fix: pass --model CATALOG_ID, "
        "or add it with `ftplan catalog import-hf`"
    )


def _optimizer(out: Imported, key: str, name: str) -> None:
    if name not in HF_OPTIMIZERS:
        raise _bad(out, key, name, f"use one of {', '.join(HF_OPTIMIZERS)}")
    out.set(key, "optimizer", HF_OPTIMIZERS[name])


def _deepspeed_file(out: Imported, key: str, path: str, base: Path) -> None:
    """ZeRO stage and offload from a DeepSpeed JSON the config names (relative to the config)."""
    p = (base / path) if not Path(path).is_absolute() else Path(path)
    if not p.exists():
        raise JobError(f"{out.source}: field '{key}': {p} does not exist. To fix: give the DeepSpeed JSON's path")
    cfg = read_json(p)
    if not isinstance(cfg, dict):
        raise JobError(f"{p}: expected a JSON object of DeepSpeed fields. To fix: give the DeepSpeed config file")
    _deepspeed_zero(out, cfg, f"{key} ({p.name}) ")


def _deepspeed_zero(out: Imported, cfg: dict, prefix: str = "") -> None:
    zero = _block(out, f"{prefix}zero_optimization", cfg.get("zero_optimization"))
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise _bad(out, f"{prefix}zero_optimization.stage", stage, "use a ZeRO stage 0-3")
    out.set(f"{prefix}zero_optimization.stage", "layout.zero", int(stage))
    if stage:
        out.set(f"{prefix}zero_optimization", "engine", "deepspeed")
        out.notes.append(
            "DeepSpeed's buckets are modelled as `ftplan export --to deepspeed` writes them (one transformer block: "
            "reduce_bucket_size, allgather_bucket_size, stage3_prefetch_bucket_size; two blocks live); DeepSpeed's "
            "defaults (5e8, 5e7, 1e9 elements) hold more"
        )
    off_opt = _block(out, f"{prefix}zero_optimization.offload_optimizer", zero.get("offload_optimizer")).get(
        "device", "none"
    )
    off_par = _block(out, f"{prefix}zero_optimization.offload_param", zero.get("offload_param")).get("device", "none")
    for k, v in (("offload_optimizer.device", off_opt), ("offload_param.device", off_par)):
        if v not in ("none", "cpu"):
            raise _bad(out, f"{prefix}zero_optimization.{k}", v, "use cpu or none (NVMe offload is not modelled)")
    if off_opt == "cpu" or off_par == "cpu":
        out.set(f"{prefix}zero_optimization.offload_*", "layout.offload",
                "optimizer+params" if off_par == "cpu" else "optimizer")  # fmt: skip


def _fsdp(out: Imported, key: str, cfg: dict) -> None:
    """An accelerate/axolotl FSDP block: full sharding is ZeRO-3, grad-and-optimizer sharding ZeRO-2."""
    strategy = str(cfg.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
    reshard = cfg.get("fsdp_reshard_after_forward", cfg.get("reshard_after_forward"))
    if reshard is not None:
        zero = 3 if reshard in (True, "FULL_SHARD") else 2
    elif strategy in ("FULL_SHARD", "1"):
        zero = 3
    elif strategy in ("SHARD_GRAD_OP", "2"):
        zero = 2
    else:
        raise _bad(out, f"{key}.fsdp_sharding_strategy", strategy, "use FULL_SHARD or SHARD_GRAD_OP")
    out.set(key, "layout.zero", zero)
    if cfg.get("fsdp_offload_params", cfg.get("offload_params")):
        out.set(f"{key}.fsdp_offload_params", "layout.offload", "optimizer+params")
    if cfg.get("fsdp_activation_checkpointing", cfg.get("activation_checkpointing")):
        out.set(f"{key}.fsdp_activation_checkpointing", "layout.recompute", "full")


def _precision(out: Imported, bf16_key: str, bf16: Any, fp16: Any, base: str = "bf16-mixed") -> None:
    if bf16 in (True, "auto", "true", "True"):
        out.set(bf16_key, "precision", base)
    elif fp16 in (True, "true", "True"):
        out.set(bf16_key.replace("bf16", "fp16"), "precision", "fp16-mixed")
    else:
        out.set(f"{bf16_key} (off)", "precision", "fp32")


def _kernels(out: Imported, cfg: dict, keys: list[str]) -> None:
    """torch.compile or fused (Liger) kernels, where the config states them: ``kernels: fused`` if any is on,
    else ``eager`` (the default: one kernel per operation)."""
    stated = [k for k in keys if k in cfg]
    if stated:
        out.set(" / ".join(stated), "kernels", "fused" if any(cfg[k] for k in stated) else "eager")


def _axolotl(out: Imported, cfg: dict, base: Path, catalog: Catalog) -> set[str]:
    used = {"base_model", "adapter", "load_in_4bit", "load_in_8bit", "lora_r", "lora_alpha", "lora_dropout",
            "lora_target_modules", "lora_target_linear", "lora_modules_to_save", "sequence_len", "micro_batch_size",
            "gradient_accumulation_steps", "gradient_checkpointing", "optimizer", "bf16", "fp16", "sample_packing",
            "flash_attention", "sdp_attention", "eager_attention", "flex_attention", "attn_implementation",
            "deepspeed", "fsdp", "fsdp_config", "torch_compile"}  # fmt: skip
    liger = sorted(k for k in cfg if k.startswith("liger_") and cfg[k])
    used |= set(liger)
    if "base_model" not in cfg:
        raise JobError(f"{out.source}: field 'base_model' is missing. To fix: name the model, or pass --model")
    out.set("base_model", "model", _model(out, "base_model", str(cfg["base_model"]), catalog))
    if cfg.get("load_in_8bit"):
        raise _bad(out, "load_in_8bit", True, "use load_in_4bit (QLoRA) or a 16-bit base")
    adapter = cfg.get("adapter")
    if adapter not in (None, "lora", "qlora"):
        raise _bad(out, "adapter", adapter, "use lora or qlora (or no adapter for full fine-tuning)")
    method = "qlora" if adapter == "qlora" or cfg.get("load_in_4bit") else "lora" if adapter else "full"
    out.set("adapter / load_in_4bit", "method", method)
    if method != "full":
        for k, j in (("lora_r", "lora.rank"), ("lora_alpha", "lora.alpha"), ("lora_dropout", "lora.dropout")):
            if cfg.get(k) is not None:
                out.set(k, j, cfg[k])
        if cfg.get("lora_target_linear"):
            out.set("lora_target_linear", "lora.target_modules", "all-linear")
        elif cfg.get("lora_target_modules"):
            targets = _names(out, "lora_target_modules", cfg["lora_target_modules"])
            out.set("lora_target_modules", "lora.target_modules", targets)
        if cfg.get("lora_modules_to_save"):
            saved = _names(out, "lora_modules_to_save", cfg["lora_modules_to_save"])
            out.set("lora_modules_to_save", "lora.modules_to_save", saved)
    if cfg.get("sequence_len") is not None:
        out.set("sequence_len", "seq_len", _whole(out, "sequence_len", cfg["sequence_len"]))
    out.set("micro_batch_size", "micro_batch", _whole(out, "micro_batch_size", cfg.get("micro_batch_size", 1)))
    accum = _whole(out, "gradient_accumulation_steps", cfg.get("gradient_accumulation_steps", 1))
    out.set("gradient_accumulation_steps", "grad_accum", accum)
    if cfg.get("gradient_checkpointing"):
        out.set("gradient_checkpointing", "layout.recompute", "full")
    _optimizer(out, "optimizer", str(cfg.get("optimizer", "adamw_torch")))
    _precision(out, "bf16", cfg.get("bf16"), cfg.get("fp16"))
    eager = bool(cfg.get("eager_attention"))
    out.set("flash_attention / sdp_attention / eager_attention", "attention", "eager" if eager else "sdpa")
    # FlexAttention: the older boolean, or Transformers' name in attn_implementation (newer releases)
    if cfg.get("attn_implementation") is not None:
        _attention(out, "attn_implementation", str(cfg["attn_implementation"]))
    elif cfg.get("flex_attention"):
        out.set("flex_attention", "attention_kernel", "flex")
    flash = cfg.get("flash_attention") or cfg.get("attn_implementation") in ("flash_attention_2", "flash_attention_3")
    # unpacked batches are padded; SDPA then takes an explicit mask, flash attention none (FlexAttention a block
    # mask, which the job's kernel says)
    padded = not cfg.get("sample_packing") and not flash
    out.set("sample_packing / flash_attention", "attention_mask", "padded" if padded else "none")
    _kernels(out, cfg, ["torch_compile", *liger])
    if cfg.get("deepspeed"):
        _deepspeed_file(out, "deepspeed", str(cfg["deepspeed"]), base)
    elif cfg.get("fsdp") or cfg.get("fsdp_config"):
        _fsdp(out, "fsdp_config", dict(_block(out, "fsdp_config", cfg.get("fsdp_config"))))
    return used


def _tune_component(cfg: dict, key: str) -> str:
    block = cfg.get(key) or {}
    return str(block.get("_component_", "")) if isinstance(block, dict) else ""


def _torchtune(out: Imported, cfg: dict, base: Path, catalog: Catalog, gpus: int) -> set[str]:
    used = {"model", "tokenizer", "batch_size", "gradient_accumulation_steps", "enable_activation_checkpointing",
            "optimizer", "dtype", "loss", "dataset", "fsdp_cpu_offload", "compile"}  # fmt: skip
    builder = _tune_component(cfg, "model").rsplit(".", 1)[-1]
    method = "qlora" if builder.startswith("qlora_") else "lora" if builder.startswith("lora_") else "full"
    name = builder.removeprefix("qlora_").removeprefix("lora_")
    if name not in TUNE_MODELS:
        raise JobError(f"{out.source}: field 'model._component_': builder {builder!r} is not mapped to a catalog "
                       f"model. To fix: pass --model CATALOG_ID")  # fmt: skip
    out.set("model._component_", "model", TUNE_MODELS[name])
    out.set("model._component_ (lora_/qlora_ prefix)", "method", method)
    m = _block(out, "model", cfg.get("model"))
    if method != "full":
        for k, j in (("lora_rank", "lora.rank"), ("lora_alpha", "lora.alpha"), ("lora_dropout", "lora.dropout")):
            if m.get(k) is not None:
                out.set(f"model.{k}", j, m[k])
        targets = []
        for t in _names(out, "model.lora_attn_modules", m.get("lora_attn_modules") or []):
            if t not in TUNE_ATTENTION:
                raise _bad(out, "model.lora_attn_modules", t, f"use {', '.join(TUNE_ATTENTION)}")
            targets.append(TUNE_ATTENTION[t])
        if m.get("apply_lora_to_mlp"):
            targets += ["gate_proj", "up_proj", "down_proj"]
        if m.get("apply_lora_to_output"):
            raise _bad(out, "model.apply_lora_to_output", True, "set it false (an adapted lm_head is not modelled)")
        out.set("model.lora_attn_modules, model.apply_lora_to_mlp", "lora.target_modules", targets)
    seq = _block(out, "tokenizer", cfg.get("tokenizer")).get("max_seq_len")
    if seq is not None:
        out.set("tokenizer.max_seq_len", "seq_len", _whole(out, "tokenizer.max_seq_len", seq))
    out.set("batch_size", "micro_batch", _whole(out, "batch_size", cfg.get("batch_size", 1)))
    accum = _whole(out, "gradient_accumulation_steps", cfg.get("gradient_accumulation_steps", 1))
    out.set("gradient_accumulation_steps", "grad_accum", accum)
    if cfg.get("enable_activation_checkpointing"):
        out.set("enable_activation_checkpointing", "layout.recompute", "full")
    opt = _tune_component(cfg, "optimizer")
    o = _block(out, "optimizer", cfg.get("optimizer"))
    if opt == "torch.optim.AdamW":
        kernel = "adamw-fused" if o.get("fused") else "adamw-forloop" if o.get("foreach") is False else "adamw"
    elif opt in TUNE_OPTIMIZERS:
        kernel = TUNE_OPTIMIZERS[opt]
    else:
        raise _bad(out, "optimizer._component_", opt, f"use torch.optim.AdamW or one of {', '.join(TUNE_OPTIMIZERS)}")
    out.set("optimizer._component_", "optimizer", kernel)
    dtype = str(cfg.get("dtype", "bf16"))
    if dtype not in ("bf16", "fp32"):
        raise _bad(out, "dtype", dtype, "use bf16 or fp32")
    # torchtune trains in the dtype itself: no fp32 master copy
    out.set("dtype", "precision", "bf16-pure" if dtype == "bf16" else "fp32")
    loss = _tune_component(cfg, "loss").rsplit(".", 1)[-1]
    out.set("loss._component_", "loss", "chunked" if loss in ("CEWithChunkedOutputLoss", "LinearCrossEntropyLoss")
            else "standard")  # fmt: skip
    packed = (cfg.get("dataset") or {}).get("packed", False) if isinstance(cfg.get("dataset"), dict) else False
    out.set("dataset.packed", "attention_mask", "none" if packed else "padded")
    _kernels(out, cfg, ["compile"])
    if gpus > 1:  # torchtune's distributed recipes shard with FSDP2
        out.set("(distributed recipe: FSDP2)", "layout.zero", 3)
        if cfg.get("fsdp_cpu_offload"):
            out.set("fsdp_cpu_offload", "layout.offload", "optimizer+params")
    return used


# Transformers' ``attn_implementation`` → (attention, attention_kernel): SDPA's flash backend is built on
# FlashAttention-2 (PyTorch's SDPA docs); ``flash_attention_3`` loads FlashAttention-3, ``flex_attention`` PyTorch's
# FlexAttention
ATTN_IMPLEMENTATIONS = {
    "eager": ("eager", "flash2"), "sdpa": ("sdpa", "flash2"), "flash_attention_2": ("sdpa", "flash2"),
    "flash_attention_3": ("sdpa", "flash3"), "flex_attention": ("sdpa", "flex"),
}  # fmt: skip


def _attention(out: Imported, key: str, value: str) -> None:
    """A Transformers ``attn_implementation`` as the job's attention and kernel."""
    if value not in ATTN_IMPLEMENTATIONS:
        raise _bad(out, key, value, f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    attention, kernel = ATTN_IMPLEMENTATIONS[value]
    out.set(key, "attention", attention)
    if kernel != "flash2":
        out.set(key, "attention_kernel", kernel)


def _trl(out: Imported, cfg: dict, base: Path, catalog: Catalog) -> set[str]:
    used = {"model_name_or_path", "per_device_train_batch_size", "gradient_accumulation_steps",
            "gradient_checkpointing", "activation_checkpointing", "optim", "bf16", "fp16", "max_length",
            "max_seq_length", "packing", "deepspeed", "fsdp", "fsdp_config", "use_peft", "lora_r", "lora_alpha",
            "lora_dropout", "lora_target_modules", "load_in_4bit", "load_in_8bit", "torch_compile",
            "use_liger_kernel", "attn_implementation"}  # fmt: skip
    if cfg.get("model_name_or_path"):
        out.set("model_name_or_path", "model", _model(out, "model_name_or_path", str(cfg["model_name_or_path"]),
                                                      catalog))  # fmt: skip
    if cfg.get("load_in_8bit"):
        raise _bad(out, "load_in_8bit", True, "use load_in_4bit (QLoRA) or a 16-bit base")
    method = "qlora" if cfg.get("load_in_4bit") else "lora" if cfg.get("use_peft") else "full"
    out.set("use_peft / load_in_4bit", "method", method)
    if method != "full":
        for k, j in (("lora_r", "lora.rank"), ("lora_alpha", "lora.alpha"), ("lora_dropout", "lora.dropout")):
            if cfg.get(k) is not None:
                out.set(k, j, cfg[k])
        if cfg.get("lora_target_modules"):
            t = cfg["lora_target_modules"]
            targets = t if t == "all-linear" else _names(out, "lora_target_modules", t)
            out.set("lora_target_modules", "lora.target_modules", targets)
    seq_key = "max_length" if "max_length" in cfg else "max_seq_length"
    seq = cfg.get(seq_key)
    if seq is not None:
        out.set(seq_key, "seq_len", _whole(out, seq_key, seq))
    batch = _whole(out, "per_device_train_batch_size", cfg.get("per_device_train_batch_size", 8))
    out.set("per_device_train_batch_size", "micro_batch", batch)
    accum = _whole(out, "gradient_accumulation_steps", cfg.get("gradient_accumulation_steps", 1))
    out.set("gradient_accumulation_steps", "grad_accum", accum)
    if cfg.get("gradient_checkpointing") or cfg.get("activation_checkpointing"):
        out.set("gradient_checkpointing", "layout.recompute", "full")
    _optimizer(out, "optim", str(cfg.get("optim", "adamw_torch")))
    _precision(out, "bf16", cfg.get("bf16"), cfg.get("fp16"))
    out.set("packing", "attention_mask", "none" if cfg.get("packing") else "padded")
    if cfg.get("attn_implementation") is not None:
        _attention(out, "attn_implementation", str(cfg["attn_implementation"]))
    _kernels(out, cfg, ["torch_compile", "use_liger_kernel"])
    if cfg.get("deepspeed"):
        _deepspeed_file(out, "deepspeed", str(cfg["deepspeed"]), base)
    elif cfg.get("fsdp"):
        fsdp = str(cfg["fsdp"])
        fsdp_cfg = dict(_block(out, "fsdp_config", cfg.get("fsdp_config")))
        if "shard_grad_op" in fsdp:
            fsdp_cfg.setdefault("fsdp_sharding_strategy", "SHARD_GRAD_OP")
        if "offload" in fsdp:
            fsdp_cfg.setdefault("fsdp_offload_params", True)
        _fsdp(out, "fsdp", fsdp_cfg)
    return used


def _deepspeed(out: Imported, cfg: dict) -> set[str]:
    used = {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
            "zero_optimization", "bf16", "fp16"}  # fmt: skip
    mb = _whole(out, "train_micro_batch_size_per_gpu", cfg.get("train_micro_batch_size_per_gpu"))
    ga = _whole(out, "gradient_accumulation_steps", cfg.get("gradient_accumulation_steps", 1))
    out.set("train_micro_batch_size_per_gpu", "micro_batch", mb)
    out.set("gradient_accumulation_steps", "grad_accum", ga)
    tb = cfg.get("train_batch_size")
    if tb is not None and tb != "auto":  # ("auto": the data-parallel GPUs come from --gpus)
        tb = _whole(out, "train_batch_size", tb)
        if mb < 1 or ga < 1 or tb % (mb * ga):
            raise _bad(out, "train_batch_size", tb, "make it micro-batch × accumulation × data-parallel GPUs")
        out.set("train_batch_size", "layout.dp", tb // (mb * ga))
    _deepspeed_zero(out, cfg)
    bf16 = _block(out, "bf16", cfg.get("bf16")).get("enabled", False)
    fp16 = _block(out, "fp16", cfg.get("fp16")).get("enabled", False)
    _precision(out, "bf16.enabled", bf16, fp16)
    return used


def import_config(
    fmt: str, path: Path, catalog: Catalog, model: str | None = None, seq_len: int | None = None, gpus: int = 1
) -> Imported:
    """``path``'s config as a job; ``model``, ``seq_len`` and ``gpus`` fill what the config does not say."""
    if fmt not in FORMATS:
        raise JobError(f"unknown config format {fmt!r}. To fix: use one of {', '.join(FORMATS)}")
    cfg = read_json(path) if path.suffix == ".json" else read_yaml(path)
    if not isinstance(cfg, dict):
        raise JobError(f"{path}: expected a mapping of {fmt} fields. To fix: give the {fmt} config file")
    out = Imported(source=str(path), fmt=fmt)
    if fmt == "axolotl":
        used = _axolotl(out, cfg, path.parent, catalog)
    elif fmt == "torchtune":
        used = _torchtune(out, cfg, path.parent, catalog, gpus)
    elif fmt == "trl":
        used = _trl(out, cfg, path.parent, catalog)
    else:
        used = _deepspeed(out, cfg)
    if model is not None:
        out.set("--model", "model", _model(out, "--model", model, catalog))
    if seq_len is not None:
        out.set("--seq-len", "seq_len", seq_len)
    if "model" not in out.job:
        raise JobError(f"{path}: the config names no model. To fix: pass --model CATALOG_ID")
    if "seq_len" not in out.job:
        raise JobError(f"{path}: the config gives no sequence length. To fix: set it there, or pass --seq-len N")
    layout = out.job.setdefault("layout", {})
    if "dp" not in layout and gpus > 1:
        out.set("--gpus", "layout.dp", gpus)
    out.ignored = sorted(k for k in cfg if k not in used)
    out.read = sorted(k for k in cfg if k in used)
    return out

"""Build a job's model with Hugging Face transformers, randomly initialised from its config.

Nothing is downloaded: the config comes from the catalog (or the job's inline architecture) and
``AutoModelFor*.from_config`` initialises the weights. The method and precision recipe are applied
the way the training frameworks the memory model follows apply them:

* ``fp32``: fp32 parameters and compute.
* ``bf16-mixed`` / ``fp16-mixed``: fp32 trainable parameters under ``torch.autocast``; frozen LoRA
  bases are loaded in 16 bits and the adapters kept in fp32 (PEFT's default adapter upcast).
* ``bf16-pure``: every parameter in bf16.
* ``fp8``: ``bf16-mixed`` with torchao's float8 training (``convert_to_float8_training``) over the
  block linears :func:`ftplan.memory.estimate.fp8_linears` names. torchao's ``Float8Linear`` casts
  its input to the autocast dtype only under CUDA autocast; on a CPU a pre-hook does the same cast, so
  that a CPU step keeps what a GPU step keeps.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any

from ftplan.arch import Architecture, Kind
from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.memory import Method, ModelOutput, Optimizer, Precision, Recompute

# Config fields that switch dropout on, per model family (Hugging Face config classes).
_DROPOUT_FIELDS = (
    "attention_dropout", "hidden_dropout", "dropout_rate", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attention_dropout_prob",
    "attn_pdrop", "residual_dropout", "embedding_dropout",
)  # fmt: skip


def require_torch() -> Any:
    """Import torch, transformers and peft, or explain how to install them."""
    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise MeasureError(
            f"ftplan measure needs {', '.join(missing)}. To fix: pip install 'ftplan[measure]' "
            "(a CPU build of torch is enough)."
        )
    import torch

    if importlib.util.find_spec("torchao") is not None:
        # torchao (which PEFT imports when present) logs on import that its CUDA kernels do not load on a
        # CPU build, and torch that a registration torchao makes is deprecated; neither matters here
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return torch


def check_measurable(job: ResolvedJob, device: str) -> None:
    """Refuse what one process on one device cannot run, with the reason."""
    lay, tr = job.layout, job.training
    if lay.gpus != 1 or int(lay.zero) != 0 or lay.offload.value != "none":
        raise MeasureError(
            "ftplan measure runs one process on one device: layout dp, tp, pp, cp, zero and offload must be 1, 1, "
            "1, 1, 0 and none. To fix: measure the single-device job, or use --nproc for data-parallel and "
            "pipeline layouts."
        )
    if lay.recompute is Recompute.SELECTIVE:
        raise MeasureError(
            "selective recomputation is a Megatron feature Hugging Face models do not have. "
            "To fix: measure recompute none or full."
        )
    if tr.loss.value != "standard":
        raise MeasureError(
            f"loss {tr.loss.value!r} is not what Hugging Face models compute. To fix: measure loss standard."
        )
    if tr.model_output is ModelOutput.KEPT_FP32:
        raise MeasureError(
            "model_output kept-fp32 is how Transformers before 4.46 returned logits (fp32); the Transformers "
            "ftplan measure runs returns them in the lm_head's dtype. To fix: measure model_output kept."
        )
    if tr.method is Method.QLORA:
        raise MeasureError(
            "QLoRA is not measurable by ftplan measure: NF4 weights cannot be built from a config without "
            "a quantised checkpoint. To fix: measure method lora (the estimate's NF4 arithmetic is exact)."
        )
    if (tr.optimizer.eight_bit or tr.optimizer.paged) and (
        device != "cuda" or importlib.util.find_spec("bitsandbytes") is None
    ):
        raise MeasureError(
            f"optimizer {tr.optimizer.value} is not measurable here: it needs bitsandbytes on a CUDA device. "
            "To fix: run with --device cuda where bitsandbytes is installed, or measure optimizer adamw."
        )


def hf_config(job: ResolvedJob) -> Any:
    """The transformers config object of the job's model, with the job's dropout setting applied."""
    from transformers import AutoConfig

    fields = dict(job.hf_config)
    model_type = fields.pop("model_type")
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "auto_map"):
        fields.pop(key, None)
    if model_type in ("t5", "mt5"):  # T5 starts decoding from the pad token (id 0)
        fields.setdefault("decoder_start_token_id", fields.get("pad_token_id", 0))
        fields.setdefault("pad_token_id", 0)
    cfg = AutoConfig.for_model(model_type, **fields)
    vocab = getattr(cfg, "vocab_size", None)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # a config class's default ids (phi3's
        value = getattr(cfg, key, None)  # 32000) may lie outside a small vocabulary; random weights need none
        if isinstance(value, int) and vocab is not None and value >= vocab:
            setattr(cfg, key, None)
    if job.training.dropout is False:  # after construction, so the config class's defaults are covered too
        for key in _DROPOUT_FIELDS:
            if hasattr(cfg, key):
                setattr(cfg, key, 0.0)
    cfg.use_cache = False
    return cfg


def _dtype(torch: Any, precision: Precision) -> Any:
    return {
        Precision.FP32: torch.float32,
        Precision.BF16_MIXED: torch.bfloat16,
        Precision.BF16_PURE: torch.bfloat16,
        Precision.BF16_FP32_ADAPTERS: torch.bfloat16,
        Precision.FP16_MIXED: torch.float16,
        Precision.FP8: torch.bfloat16,
    }[precision]


def build_model(job: ResolvedJob, device: str, seed: int = 0) -> Any:
    """The job's model on ``device``, method applied, in training mode."""
    torch = require_torch()
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    tr = job.training
    cfg = hf_config(job)
    torch.manual_seed(seed)
    auto = {  # encoders train a sequence-classification head (config.num_labels classes)
        Kind.ENCODER_DECODER: AutoModelForSeq2SeqLM,
        Kind.ENCODER: AutoModelForSequenceClassification,
    }.get(job.arch.kind, AutoModelForCausalLM)
    attn = "eager" if job.arch.model_type in ("t5", "mt5") else tr.attention.value
    try:
        model = auto.from_config(cfg, attn_implementation=attn)
    except ValueError as exc:
        if "attention implementation" not in str(exc):
            raise
        raise MeasureError(
            f"transformers does not build {job.arch.model_type} with attention {attn}. To fix: set "
            "`attention: eager` in the job to measure it (the estimate follows the job's attention)."
        ) from None
    low = _dtype(torch, tr.precision)
    base_fp32 = tr.lora is not None and tr.lora.base_fp32
    bf16_model = tr.precision in (Precision.BF16_PURE, Precision.BF16_FP32_ADAPTERS)
    if bf16_model or (tr.precision.mixed and tr.method is not Method.FULL and not base_fp32):
        model = model.to(low)
    model = model.to(device)
    fp8 = tr.fp8_setup
    if fp8 is not None:
        _convert_fp8(torch, model, job, fp8.recipe.value, device)
    if job.layout.recompute is Recompute.FULL:
        kwargs = {"use_reentrant": False}  # the non-reentrant checkpoint PyTorch recommends
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.20
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if tr.method is not Method.FULL:
        from peft import LoraConfig, get_peft_model

        lora = tr.lora
        assert lora is not None
        targets: Any = "all-linear" if lora.target_modules == ("all-linear",) else list(lora.target_modules)
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            modules_to_save=list(lora.modules_to_save) or None,
            target_parameters=list(lora.target_parameters) or None,
            fan_in_fan_out=job.arch.model_type == "gpt2",  # GPT-2's Conv1D stores its weight transposed
            task_type={Kind.ENCODER_DECODER: "SEQ_2_SEQ_LM", Kind.ENCODER: "SEQ_CLS"}.get(job.arch.kind, "CAUSAL_LM"),
        )
        with warnings.catch_warnings():  # PEFT's own rank pattern for a fused gate_up_proj, which it resolves
            warnings.filterwarnings("ignore", message="The following (alpha|rank)_pattern keys did not match")
            model = get_peft_model(model, config, autocast_adapter_dtype=tr.precision is not Precision.BF16_PURE)
        if job.layout.recompute is Recompute.FULL:
            model.enable_input_require_grads()
    model.train()
    return model


def _convert_fp8(torch: Any, model: Any, job: ResolvedJob, recipe: str, device: str) -> None:
    """Swap the block linears for torchao's ``Float8Linear`` (the estimate's conversion rule)."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError:
        raise MeasureError("precision fp8 is measured with torchao. To fix: pip install 'ftplan[measure]'.") from None
    blocks = {id(m) for layers in layer_lists(model, job.arch).values() for layer in layers
              for m in layer.modules()}  # fmt: skip

    def converts(module: Any, fqn: str) -> bool:
        return id(module) in blocks and module.in_features % 16 == 0 and module.out_features % 16 == 0

    convert_to_float8_training(model, module_filter_fn=converts, config=Float8LinearConfig.from_recipe_name(recipe))
    if device == "cpu":  # Float8Linear casts its input to the autocast dtype under CUDA autocast only

        def cast_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if not torch.is_autocast_enabled("cpu"):
                return None
            dtype = torch.get_autocast_dtype("cpu")
            return (args[0].to(dtype), *args[1:])

        from torchao.float8.float8_linear import Float8Linear

        for module in model.modules():
            if isinstance(module, Float8Linear):
                module.register_forward_pre_hook(cast_input)


def layer_lists(model: Any, arch: Architecture | None = None) -> dict[str, Any]:
    """The model's stacks of transformer layers, by stack name (main, encoder, decoder; a MoE model's
    dense layers, leading (DeepSeek-V3) or interleaved (Llama 4), are the estimate's "dense" stack)."""
    import torch

    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or not len(module):
            continue
        if name.rsplit(".", 1)[-1] not in ("layers", "block", "layer", "h"):
            continue
        stack = "decoder" if "decoder." in name + "." and "encoder" not in name else "main"
        if "encoder" in name:
            stack = "encoder"
        found.setdefault(stack, module)
    if set(found) == {"encoder"}:  # an encoder-only model: its one stack is the estimate's "main"
        found = {"main": found["encoder"]}
    if arch is not None and arch.dense_layers and "main" in found:
        layers = found.pop("main")
        found = {st: [layers[i] for i in idx] for st, idx in arch.stack_indices.items()} | found
    return found


# The learning rate of a measurement: the steps' memory does not depend on it
LEARNING_RATE = 1e-4


def optimizer_class(job: ResolvedJob, lr: float = LEARNING_RATE) -> tuple[Any, dict[str, Any]]:
    """The job's optimizer class and arguments; ``adamw`` is the multi-tensor (``foreach``) one CUDA
    uses by default."""
    torch = require_torch()
    opt = job.training.optimizer
    if opt is Optimizer.ADAMW:
        return torch.optim.AdamW, {"lr": lr, "foreach": True}
    if opt is Optimizer.ADAMW_FUSED:
        return torch.optim.AdamW, {"lr": lr, "fused": True}
    if opt is Optimizer.ADAMW_FORLOOP:
        return torch.optim.AdamW, {"lr": lr, "foreach": False}
    if opt is Optimizer.SGD:
        return torch.optim.SGD, {"lr": lr, "momentum": 0.9, "foreach": True}
    if opt is Optimizer.ADAFACTOR:
        return torch.optim.Adafactor, {"lr": lr, "foreach": False}
    import bitsandbytes as bnb

    cls = {
        Optimizer.ADAMW_8BIT: bnb.optim.AdamW8bit,
        Optimizer.PAGED_ADAMW: bnb.optim.PagedAdamW,
        Optimizer.PAGED_ADAMW_8BIT: bnb.optim.PagedAdamW8bit,
    }[opt]
    return cls, {"lr": lr}


def build_optimizer(job: ResolvedJob, params: list[Any], lr: float = LEARNING_RATE) -> Any:
    """The job's optimizer over ``params``."""
    cls, kwargs = optimizer_class(job, lr)
    return cls(params, **kwargs)


def cpu_kernels() -> str:
    """The class of CPU kernels a measurement on this machine runs: ATen's vector capability, and whether
    oneDNN runs bf16 natively (``+onednn-bf16``, AVX-512 with BF16/AMX) or ATen's fallback converts through
    fp32. The two run bf16 operations with different temporaries, so a bf16 job's measured CPU peak differs
    between them (by up to 4% on the measured grid); fp32 jobs measure the same."""
    torch = require_torch()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.backends.cpu.get_cpu_capability().lower() + ("+onednn-bf16" if bf16 else "")


def autocast_context(job: ResolvedJob, device: str) -> Any:
    """``torch.autocast`` for the mixed recipes, a no-op context otherwise."""
    torch = require_torch()
    tr = job.training
    return torch.autocast(device_type=device, dtype=_dtype(torch, tr.precision), enabled=tr.precision.mixed)

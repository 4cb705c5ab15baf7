"""Tensor parallelism for ``ftplan measure --nproc``: the model's linears sharded with PyTorch's DTensor plans.

Each rank builds the whole model from the same seed, then ``parallelize_module`` shards it as torchtitan
shards a Llama-style decoder (``torchtitan/models/llama3/infra/parallelize.py``, ``apply_tp``):

* the token embedding row-wise over the vocabulary, its output sharded over the sequence;
* every norm as ``SequenceParallel`` (it runs on ``seq_len / tp`` tokens);
* the attention block's and the MLP's input all-gathered over the sequence (``PrepareModuleInput``);
* q/k/v and gate/up column-wise, o and down row-wise with a reduce-scatter back to the sequence shards;
* the lm_head column-wise over the vocabulary, its logits left sharded for the vocabulary-parallel loss
  (``loss_parallel``), which the caller enters around the steps.

What is measured is what that runs; the estimate follows it under ``sequence_parallel: torch``.
"""

from __future__ import annotations

from typing import Any

from ftplan.arch import ROW_PARALLEL_ROLES, Kind
from ftplan.errors import MeasureError
from ftplan.job import ResolvedJob
from ftplan.memory import Method

# the roles of a layer's linears the plan shards column-wise (row-wise: ROW_PARALLEL_ROLES)
_COLUMN = ("q", "k", "v", "gate", "up")


def check_tensor_parallel(job: ResolvedJob, nproc: int) -> None:
    """Refuse, with the reason, what the DTensor plan cannot run as the estimate counts it."""
    lay, arch = job.layout, job.arch
    if lay.tp * lay.dp != nproc:
        raise MeasureError(
            f"--nproc {nproc} runs one rank a tensor-parallel shard of each data-parallel replica; the job has "
            f"layout.tp {lay.tp} and dp {lay.dp}. To fix: use --nproc {lay.tp * lay.dp}."
        )
    if lay.pp > 1 or lay.cp > 1 or lay.ep > 1:
        raise MeasureError(
            f"--nproc measures tensor parallelism alone or under FSDP; the job also has pp {lay.pp}, cp {lay.cp}, "
            f"ep {lay.ep}. To fix: set layout.pp, cp and ep to 1."
        )
    if lay.dp > 1 and (lay.zero < 2 or (lay.dp_shard and lay.dp_shard != lay.dp)):
        raise MeasureError(
            f"--nproc runs tensor parallelism with data parallelism as torchtitan does, FSDP2 over the data-parallel "
            f"ranks (ZeRO-2/3, without HSDP); the job has zero {int(lay.zero)}"
            f"{f', dp_shard {lay.dp_shard}' if lay.dp_shard else ''}. To fix: set zero 2 or 3 (and drop dp_shard), "
            "or dp 1."
        )
    if job.training.method is not Method.FULL:
        raise MeasureError(
            "PEFT's adapters wrap the linears a tensor-parallel plan shards, which parallelize_module does not "
            "reach. To fix: measure tensor parallelism with method full."
        )
    roles = {x.role for lin in arch.block_linears.values() for x in lin}
    if arch.kind is not Kind.DECODER or arch.experts or not roles <= {*_COLUMN, *ROW_PARALLEL_ROLES}:
        raise MeasureError(
            f"--nproc's tensor-parallel plan is torchtitan's for Llama-style decoders (q/k/v/o, gate/up/down); "
            f"{arch.model_type} has {', '.join(sorted(roles))}. To fix: measure a Llama, Mistral, Qwen2 or Qwen3 model."
        )
    if arch.norm_placement != "pre" or arch.parallel_residual:
        raise MeasureError(
            f"--nproc's tensor-parallel plan puts sequence parallelism on pre-norms; {arch.model_type} places its "
            "norms otherwise. To fix: measure a Llama, Mistral, Qwen2 or Qwen3 model."
        )
    if arch.tied:
        raise MeasureError(
            "a tied embedding is one weight the plan would shard twice (row-wise as the embedding, column-wise "
            "as the lm_head). To fix: measure with tie_word_embeddings: false."
        )


def parallelize(model: Any, job: ResolvedJob, device: str, mesh: Any = None) -> None:
    """Shard ``model`` with torchtitan's Llama plan (module docstring) over ``mesh``, the tensor-parallel
    ranks (default: all of them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    if mesh is None:
        mesh = init_device_mesh(device, (job.layout.tp,), mesh_dim_names=("tp",))
    names = {x.name: x.role for lin in job.arch.block_linears.values() for x in lin}
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    for layer in base.layers:
        plan: dict[str, Any] = {}
        for path, _ in layer.named_modules():
            leaf = path.rsplit(".", 1)[-1]
            role = names.get(leaf)
            if role in _COLUMN:
                plan[path] = ColwiseParallel()
            elif role in ROW_PARALLEL_ROLES:
                plan[path] = RowwiseParallel(output_layouts=Shard(1), use_local_output=False)
            elif path in ("input_layernorm", "post_attention_layernorm"):
                plan[path] = SequenceParallel()
        attn, mlp = _parent(layer, names, "q"), _parent(layer, names, "gate")
        plan[attn] = PrepareModuleInput(
            input_kwarg_layouts={"hidden_states": Shard(1)}, desired_input_kwarg_layouts={"hidden_states": Replicate()}
        )
        plan[mlp] = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
        parallelize_module(layer, mesh, plan)
    try:
        parallelize_module(model, mesh, {
            _path(model, base.embed_tokens): RowwiseParallel(
                input_layouts=Replicate(), output_layouts=Shard(1), use_local_output=False
            ),
            _path(model, base.norm): SequenceParallel(),
            _path(model, model.get_output_embeddings()): ColwiseParallel(
                input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False
            ),
        })  # fmt: skip
    except (AttributeError, KeyError) as exc:
        raise MeasureError(f"{job.arch.model_type}'s modules are not laid out as the tensor-parallel plan expects "
                           f"({exc}). To fix: measure a Llama, Mistral, Qwen2 or Qwen3 model.") from None  # fmt: skip
    _replicate_rest(model, mesh)


def _replicate_rest(model: Any, mesh: Any) -> None:
    """Modules the plan leaves whole that hold parameters (Qwen3's q/k norms, over the local heads): their
    parameters as replicated DTensors (an optimizer steps DTensors or tensors, not both), their input and
    output local, as torchtitan's ``NoParallel`` does."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_module

    def to_dtensor(module: Any, inputs: tuple[Any, ...], mesh: Any) -> tuple[Any, ...]:
        return tuple(DTensor.from_local(x, mesh, [Replicate()], run_check=False) for x in inputs)

    def to_local(module: Any, output: Any, mesh: Any) -> Any:
        return output.to_local()

    for module in list(model.modules()):
        if any(not isinstance(p, DTensor) for p in module.parameters(recurse=False)):
            distribute_module(module, mesh, input_fn=to_dtensor, output_fn=to_local)


def loss_parallel() -> Any:
    """The context in which the vocabulary-sharded logits' cross-entropy runs (torch's ``loss_parallel``)."""
    from torch.distributed.tensor.parallel import loss_parallel as context

    return context()


def _parent(layer: Any, names: dict[str, str], role: str) -> str:
    """The path, inside ``layer``, of the module holding the linear of ``role`` (its attention or MLP)."""
    for path, _ in layer.named_modules():
        if "." in path and names.get(path.rsplit(".", 1)[-1]) == role:
            return path.rsplit(".", 1)[0]
    raise MeasureError(f"no {role} projection inside a layer. To fix: measure a Llama, Mistral, Qwen2 or Qwen3 model.")


def _path(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module)

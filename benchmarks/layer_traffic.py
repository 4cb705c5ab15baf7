"""Bytes a token moves through a layer's memory-bound operations in an eager training micro-step (norms, rotary
embeddings, activations, residual adds, autocast's casts; not the matmuls nor the attention kernels): measured on
tiny models of each family and fitted as a linear function of the layer's widths, the table
:mod:`ftplan.timing.traffic` holds.

For each family and precision class the script measures five width variants of the family's tiny configuration
(the base; twice the MLP width; twice the key/value heads; twice the hidden size and heads; twice the heads at
the same head size where the family's config takes one, so the q width is fitted apart from the hidden size), fits
``bytes = c · (hidden, MLP width a token passes through, q width, k/v width, 1)`` on them by least squares (a
layer's elementwise work is linear in its widths: the fit's residual is printed), and checks the fit on a sixth
variant it was not fitted on (every width doubled, and the vocabulary). The head (embeddings, final norm, loss)
is fitted likewise on ``(hidden, vocabulary, 1)`` over all six. Each measurement is
``ftplan.measure.dispatch.token_traffic``: two and three layers, two sequence lengths.

Eager attention (``attention: eager``) adds the score tensors' operations, whose bytes grow with the keys a query
attends: ``--eager-attention`` measures them on the family's tiny configuration as the difference between its
eager and SDPA micro-steps of one layer more, at three sequence lengths (the part growing as their square,
exactly) and two head counts (a part per head, the scaling, mask add and softmax, and a part a layer shares,
the mask's read), the table ``timing.traffic.EAGER_SCORES`` holds.

LoRA (``--lora``) adds PEFT's operations around each adapter (the input's cast and dropout, the output's scaling,
sum and cast back, and their gradients). For each adapters' class and with and without dropout the script
measures a LoRA layer of the family's tiny configuration with five sets of adapted linears and fits ``bytes = c ·
(adapted input widths, adapted output widths, 1)``: the first two are ``timing.traffic.ADAPTER``'s row, the third
the layer under them, which it prints beside what the model takes for that layer (a bf16 model's table less the
frozen norms' weight gradients, ``traffic.frozen_norm_bytes``).

Usage: python benchmarks/layer_traffic.py [family ...]    (prints the table rows to paste, and the check)
       python benchmarks/layer_traffic.py --eager-attention [family]    (default llama)
       python benchmarks/layer_traffic.py --lora [family ...]    (default llama qwen3 gpt_neox)
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from ftplan.arch import Architecture
from ftplan.catalog import load_catalog
from ftplan.job import resolve_job
from ftplan.measure.dispatch import token_traffic
from ftplan.report.tables import render_table
from ftplan.schema.job import parse_job
from ftplan.timing import traffic

# The families measured (benchmarks/dispatch_counts.py's tiny configurations; Gemma 2, which transformers
# builds with eager attention only, is left to the fallback: its score tensors' traffic grows with the sequence)
FAMILIES = ("llama", "qwen2", "qwen3", "phi", "gpt_neox", "mixtral")
PRECISIONS = {"mixed": "bf16-mixed", "pure": "bf16-pure", "fp32": "fp32"}
# Families whose transformers config takes an explicit ``head_dim`` (the others derive it as hidden ÷ heads, so
# their q width is the hidden size)
HEAD_DIM = {"llama", "qwen3", "mixtral"}


def variants(base: dict) -> list[dict]:
    """The five fitted width variants of a tiny configuration, then the check."""
    heads, kv = base["num_attention_heads"], base.get("num_key_value_heads")
    if base["model_type"] in HEAD_DIM:  # (twice the heads then doubles the q width, not only the head count)
        base = dict(base, head_dim=base.get("head_dim", base["hidden_size"] // heads))
    out = [dict(base), dict(base, intermediate_size=2 * base["intermediate_size"])]
    if kv is not None and 2 * kv <= heads:
        out.append(dict(base, num_key_value_heads=2 * kv))
    twice = {"hidden_size": 2 * base["hidden_size"], "num_attention_heads": 2 * heads}
    if kv is not None:
        twice["num_key_value_heads"] = 2 * kv
    out.append(dict(base, **twice))
    out.append(dict(base, num_attention_heads=2 * heads, **({"num_key_value_heads": 2 * kv} if kv else {})))
    check = dict(base, **twice, intermediate_size=2 * base["intermediate_size"], vocab_size=2 * base["vocab_size"])
    return [*out, check]


def _job(config: dict, cls: str):
    data = {"architecture": config, "precision": PRECISIONS[cls], "seq_len": 32, "micro_batch": 2, "dropout": False}
    return resolve_job(parse_job(data, "traffic"), load_catalog(), "traffic")


def measure(family: str, cls: str) -> tuple[list[Architecture], np.ndarray, np.ndarray]:
    """The variants' architectures, their layers' (forward, backward) bytes a token and their heads'."""
    from dispatch_counts import CONFIGS

    archs, layers, heads = [], [], []
    for config in variants(CONFIGS[family]):
        job = _job(config, cls)
        layer, head = token_traffic(job)
        archs.append(job.arch)
        layers.append(layer)
        heads.append(head)
    return archs, np.array(layers), np.array(heads)


def fit(archs: list[Architecture], layers: np.ndarray, heads: np.ndarray) -> dict:
    """Layer coefficients on the fitted variants, head coefficients on all, and their errors on the check."""
    w = np.array([traffic.widths(a) for a in archs], dtype=float)
    h = np.array([traffic.head_widths(a) for a in archs], dtype=float)
    layer = np.linalg.lstsq(w[:-1], layers[:-1], rcond=None)[0]  # (5, 2)
    head = np.linalg.lstsq(h, heads, rcond=None)[0]  # (3, 2)
    return {
        "layer": layer.T, "head": head.T,
        "residual": float(np.max(np.abs(w[:-1] @ layer / layers[:-1] - 1))),
        "check": w[-1] @ layer / layers[-1] - 1, "head_check": h @ head / heads - 1,
    }  # fmt: skip


def score_slopes(family: str, cls: str, heads: int) -> tuple[float, float]:
    """Bytes eager attention adds over SDPA a token a layer, per key it attends, (forward, backward): a micro-step's
    bytes at sequence lengths ``s``, ``2s`` and ``4s`` are ``a·s² + b·s + c`` (the score tensors, what grows with
    the tokens, what a micro-step moves once), so ``f(4s) − 3·f(2s) + 2·f(s) = 6·a·s²``, exactly; ``a`` over the
    micro-batch's sequences and the layers is the bytes a token per key."""
    from dataclasses import replace

    from dispatch_counts import CONFIGS

    from ftplan.measure.dispatch import micro_step_traffic, with_layers
    from ftplan.memory.setup import Attention

    base = CONFIGS[family]
    head_dim = base["hidden_size"] // base["num_attention_heads"]
    config = dict(base, num_attention_heads=heads)
    if family in HEAD_DIM:
        config["head_dim"] = head_dim
    else:
        config["hidden_size"] = head_dim * heads
    seq = 32
    added = {}  # eager's bytes over SDPA's, (forward, backward), by (layers, length)
    for layers in (2, 3):
        for length in (seq, 2 * seq, 4 * seq):
            job = with_layers(_job(config, cls), layers)
            job = replace(job, training=replace(job.training, seq_len=length))
            eager = replace(job, training=replace(job.training, attention=Attention.EAGER))
            (sf, sb), (ef, eb) = micro_step_traffic(job), micro_step_traffic(eager)
            added[layers, length] = (ef - sf, eb - sb)
    # one layer's: the third layer's (the mask the model builds once a forward cancels)
    layer = {n: tuple(added[3, n][k] - added[2, n][k] for k in (0, 1)) for n in (seq, 2 * seq, 4 * seq)}
    per = job.layout.micro_batch * 6 * seq**2
    f, b = (layer[4 * seq][k] - 3 * layer[2 * seq][k] + 2 * layer[seq][k] for k in (0, 1))
    return f / per, b / per


def eager_scores(family: str) -> None:
    """Print ``timing.traffic.EAGER_SCORES``' rows: per head and per layer bytes a key, forward and backward."""
    from dispatch_counts import CONFIGS

    heads = CONFIGS[family]["num_attention_heads"]  # (doubled for the per-head part)
    rows = []
    for cls in PRECISIONS:
        (f1, b1), (f2, b2) = score_slopes(family, cls, heads), score_slopes(family, cls, 2 * heads)
        per_head = ((f2 - f1) / heads, (b2 - b1) / heads)
        shared = (f1 - heads * per_head[0], b1 - heads * per_head[1])
        cells = ", ".join(f"{round(x, 3):g}" for x in (*per_head, *shared))
        print(f'    "{cls}": ({cells}),', flush=True)
        rows.append([family, cls, f"{f1:g}", f"{b1:g}", f"{f2:g}", f"{b2:g}"])
    print()
    head_cols = [f"{n} heads {d}" for n in (heads, 2 * heads) for d in ("forward", "backward")]
    print(render_table(["family", "precision", *head_cols], rows, right={2, 3, 4, 5}))


# Adapted linears of each family's tiny configuration, five sets whose input and output widths solve the fit
LORA_TARGETS = {
    "llama": [["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], ["q_proj", "v_proj"],
              ["gate_proj", "up_proj", "down_proj"], ["o_proj", "down_proj"], ["k_proj"]],
    "gpt_neox": [["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"], ["query_key_value"],
                 ["dense_h_to_4h", "dense_4h_to_h"], ["dense", "dense_4h_to_h"], ["dense_h_to_4h"]],
}  # fmt: skip
LORA_TARGETS["qwen3"] = LORA_TARGETS["llama"]
# The adapters' classes (timing.dispatch.adapter_class) and the precision that gives each
LORA_PRECISIONS = {"pure": "bf16-pure", "fp32-adapters": "bf16-fp32-adapters", "mixed": "bf16-mixed", "fp32": "fp32"}


def lora_fit(family: str, precision: str, dropout: float) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Coefficients of (adapted input widths, output widths, 1) on a LoRA layer's (forward, backward) bytes a
    token (3 × 2), the fit's largest relative residual, and the model's (forward, backward) for the layer
    without adapters."""
    from dispatch_counts import CONFIGS

    rows, measured = [], []
    for targets in LORA_TARGETS[family]:
        lora = {"rank": 8, "dropout": dropout, "target_modules": targets}
        data = {"architecture": CONFIGS[family], "precision": precision, "seq_len": 32, "micro_batch": 2,
                "dropout": False, "method": "lora", "lora": lora}  # fmt: skip
        job = resolve_job(parse_job(data, "traffic"), load_catalog(), "traffic")
        rows.append([*traffic.adapted_widths(job.arch, job.training)[:2], 1])
        measured.append(token_traffic(job)[0])
    x, y = np.array(rows, dtype=float), np.array(measured)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    residual = float(np.max(np.abs(x @ coef - y) / y))
    fwd, bwd, _, _ = traffic.token_bytes(job.arch, job.training)  # (a LoRA layer's own: bf16 base, frozen norms)
    layers = job.arch.total_layers  # (adapted_widths sums every layer's: a layer's is a share of them)
    return coef * np.array([[layers], [layers], [1]]), residual, (fwd, bwd)


def lora_table(families: list[str]) -> None:
    """Print ``timing.traffic.ADAPTER``'s rows as each family measures them, and the layer under the adapters."""
    rows = []
    for family in families:
        for cls, precision in LORA_PRECISIONS.items():
            for dropout in (0.0, 0.05):
                coef, residual, (mf, mb) = lora_fit(family, precision, dropout)
                (fi, bi), (fo, bo), (lf, lb) = (tuple(round(float(v), 3) for v in c) for c in coef)
                print(f'    {family} "{cls}" dropout {dropout > 0}: (({fi:g}, {fo:g}), ({bi:g}, {bo:g}))', flush=True)
                rows.append([family, cls, "yes" if dropout else "no", f"{residual:.2%}", f"{lf:g}", f"{mf:g}",
                             f"{lb:g}", f"{mb:g}"])  # fmt: skip
    print()
    print(render_table(["family", "adapters", "dropout", "fit residual", "layer forward", "model", "layer backward",
                        "model"], rows, right={3, 4, 5, 6, 7}))  # fmt: skip


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    warnings.filterwarnings("ignore")
    if argv[:1] == ["--eager-attention"]:
        eager_scores(argv[1] if len(argv) > 1 else "llama")
        return
    if argv[:1] == ["--lora"]:
        lora_table(argv[1:] or list(LORA_TARGETS))
        return
    families = argv or list(FAMILIES)
    rows = []
    for family in families:
        for cls in PRECISIONS:
            f = fit(*measure(family, cls))
            fwd, bwd = (tuple(round(float(x), 2) for x in c) for c in f["layer"])
            hf, hb = (tuple(round(float(x), 2) for x in c) for c in f["head"])
            print(f'    "{family}": {{"{cls}": ({fwd}, {bwd})}},  # head {hf} {hb}', flush=True)
            rows.append([family, cls, f"{f['residual']:.2%}", f"{f['check'][0]:+.2%}", f"{f['check'][1]:+.2%}",
                         f"{np.max(np.abs(f['head_check'])):.2%}"])  # fmt: skip
    print()
    print(render_table(["family", "precision", "fit residual", "check forward", "check backward", "head |error|"],
                       rows, right={2, 3, 4, 5}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])

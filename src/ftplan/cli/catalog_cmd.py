"""`ftplan catalog gpus|models|instances|import-hf`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from ftplan.arch import architecture_from_hf
from ftplan.catalog import default_user_catalog, import_hf_config, load_catalog
from ftplan.cli.common import FORMAT_HELP, Format, check_writable, emit, render
from ftplan.report.tables import render_table

app = typer.Typer(help="Browse the bundled catalogs and import model configs.", no_args_is_help=True)

FILTER = typer.Option(None, "--filter", "-f", help="Keep rows whose text contains this (case-insensitive).")
FMT = typer.Option(Format.TABLE, "--format", help=FORMAT_HELP)
OUT = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout.")
USER = typer.Option(None, "--user-catalog", help="Extra models file (default ./ftplan.models.yaml).")


def _show(frame: pd.DataFrame, fmt: Format, filt: str | None, output: Path | None) -> None:
    if filt:
        mask = frame.astype(str).apply(lambda col: col.str.contains(filt, case=False, regex=False)).any(axis=1)
        frame = frame[mask]
    records = json.loads(frame.to_json(orient="records"))

    def table() -> str:
        rows = [["" if pd.isna(v) else str(v) for v in r] for r in frame.itertuples(index=False)]
        return render_table(list(frame.columns), rows)

    emit(render(fmt, table, lambda: records, lambda: records), output)


@app.command("gpus")
def gpus(filter: str | None = FILTER, format: Format = FMT, output: Path | None = OUT) -> None:
    """GPUs: memory, dense TFLOP/s, bandwidths, node and NVLink domain sizes, NVLink SHARP, and purchase price."""
    cat = load_catalog()
    frame = pd.DataFrame(
        [
            {
                "id": g.id, "memory_gib": round(g.memory_mib / 1024, 1), "bf16_tflops": g.tflops.bf16,
                "fp16_tflops": g.tflops.fp16, "fp8_tflops": g.tflops.fp8, "hbm_gbs": g.hbm_gbs,
                "intra_node_gbs": g.intra_node_gbs, "gpus_per_node": g.max_gpus_per_node,
                "nvlink_domain": g.nvlink_domain or g.max_gpus_per_node, "nvls": g.nvls,
                "usd_per_gpu": g.purchase_usd_per_gpu, "price_date": g.purchase_date,
            }
            for g in cat.gpus.values()
        ]
    )  # fmt: skip
    _show(frame, format, filter, output)


@app.command("models")
def models(
    filter: str | None = FILTER, format: Format = FMT, output: Path | None = OUT, user_catalog: Path | None = USER
) -> None:
    """Models: architecture and parameter counts (computed and official)."""
    cat = load_catalog(user_models=user_catalog)
    rows = []
    for m in cat.models.values():
        a = architecture_from_hf(m.config, f"model {m.id}")
        rows.append(
            {
                "id": m.id, "type": a.model_type, "kind": a.kind.value, "params_b": round(a.total_params / 1e9, 3),
                "official_b": round(m.params_official / 1e9, 3) if m.params_official else None,
                "active_b": round(a.active_params / 1e9, 3), "layers": a.total_layers, "hidden": a.hidden,
                "heads": a.heads, "kv_heads": a.kv_heads, "ffn": a.ffn, "vocab": a.vocab,
                "experts": a.experts or None,
            }
        )  # fmt: skip
    _show(pd.DataFrame(rows).astype({"experts": "Int64"}), format, filter, output)  # whole numbers, blank if none


@app.command("instances")
def instances(filter: str | None = FILTER, format: Format = FMT, output: Path | None = OUT) -> None:
    """Cloud instance types: GPUs per node, host memory, on-demand and spot prices."""
    cat = load_catalog()
    frame = pd.DataFrame(
        [
            {
                "instance": i.key, "region": i.region, "gpu": i.gpu, "gpus": i.gpus_per_node,
                "host_gib": i.host_memory_gib, "on_demand_usd_h": i.on_demand_usd_per_h,
                "spot_usd_h": i.spot_usd_per_h, "as_of": i.as_of,
            }
            for i in cat.instances.values()
        ]
    )  # fmt: skip
    _show(frame, format, filter, output)


@app.command("import-hf")
def import_hf(
    config: Path = typer.Argument(..., help="A local Hugging Face config.json."),
    id: str | None = typer.Option(None, "--id", help="Catalog id for the model (default: from the config)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="User catalog file to append to."),
    force: bool = typer.Option(False, "--force", help="Replace a model the catalogs already define under this id."),
) -> None:
    """Add a model from a local config.json to the user catalog (no network)."""
    check_writable(output)
    before = set(load_catalog(user_models=output).models)
    entry = import_hf_config(config, id, output, force=force)
    shadowed = entry.id in before
    a = architecture_from_hf(entry.config, str(config))
    target = output or default_user_catalog()
    typer.echo(
        f"added {entry.id} ({a.model_type}, {a.total_params / 1e9:.3f}B parameters) to {target}; "
        f"use it as `model: {entry.id}`"
        + (f". {target} now defines {entry.id} in place of the earlier entry" if shadowed else "")
    )

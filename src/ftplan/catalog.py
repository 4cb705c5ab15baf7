"""Load the catalogs (GPUs, models, cloud instances) and look names up with did-you-mean."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from ftplan.arch import Architecture, architecture_from_hf
from ftplan.errors import CatalogError, FtplanError, did_you_mean
from ftplan.io import describe_validation_error, read_json, read_yaml, write_text_atomic
from ftplan.schema.catalog import Gpu, Instance, ModelEntry
from ftplan.units import GIB

USER_CATALOG_ENV = "FTPLAN_USER_CATALOG"
CATALOG_DIR_ENV = "FTPLAN_CATALOG_DIR"
DEFAULT_USER_CATALOG = "ftplan.models.yaml"


def default_catalog_dir() -> Path:
    """The bundled catalogs: $FTPLAN_CATALOG_DIR, the installed copy, or the source tree's."""
    if os.environ.get(CATALOG_DIR_ENV):
        return Path(os.environ[CATALOG_DIR_ENV])
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalogs", here.parents[1] / "catalogs"):
        if (candidate / "gpus.yaml").exists():
            return candidate
    raise CatalogError("bundled catalogs not found. To fix: set FTPLAN_CATALOG_DIR to a catalogs/ folder.")


def default_user_catalog() -> Path:
    return Path(os.environ.get(USER_CATALOG_ENV, DEFAULT_USER_CATALOG))


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@dataclass
class Catalog:
    """Typed lookups over the catalog files. Build with :func:`load_catalog`."""

    gpus: dict[str, Gpu]
    models: dict[str, ModelEntry]
    instances: dict[str, Instance]

    @cached_property
    def _gpu_names(self) -> dict[str, str]:
        names = {}
        for g in self.gpus.values():
            for n in [g.id, g.name, *g.aliases]:
                names.setdefault(_norm(n), g.id)
        return names

    def gpu(self, name: str, where: str = "gpu") -> Gpu:
        gid = self._gpu_names.get(_norm(name))
        if gid is None:
            hint = did_you_mean(name, self.gpus)
            raise CatalogError(f"{where}: unknown GPU {name!r}.{hint} List them with `ftplan catalog gpus`.")
        return self.gpus[gid]

    def model(self, name: str, where: str = "model") -> ModelEntry:
        entry = self.models.get(_norm(name)) or self.models.get(name)
        if entry is None:
            hint = did_you_mean(name, self.models)
            raise CatalogError(
                f"{where}: unknown model {name!r}.{hint} List them with `ftplan catalog models`, "
                "or give an inline `architecture:`."
            )
        return entry

    def architecture(self, name: str, where: str = "model") -> Architecture:
        return architecture_from_hf(self.model(name, where).config, f"{where} {name!r}")

    def instance(self, key: str, where: str = "instance") -> Instance:
        found = self.instances.get(key) or self.instances.get(key.lower())
        if found is None:
            matches = [k for k in self.instances if k.split("/", 1)[1].lower() == key.lower()]
            if len(matches) == 1:
                return self.instances[matches[0]]
            hint = did_you_mean(key, self.instances)
            raise CatalogError(
                f"{where}: unknown instance {key!r}.{hint} Use CLOUD/TYPE as in `ftplan catalog instances`."
            )
        return found


def _load_models(path: Path, into: dict[str, ModelEntry]) -> None:
    data = read_yaml(path)
    rows = data.get("models") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise CatalogError(f"{path}: expected a top-level 'models:' list.")
    for i, row in enumerate(rows):
        try:
            entry = ModelEntry.model_validate(row)
        except ValidationError as exc:
            raise CatalogError(f"{path}: models[{i}]{describe_validation_error(exc)}") from None
        into[entry.id] = entry


def load_catalog(catalog_dir: Path | None = None, user_models: Path | None = None) -> Catalog:
    """Read ``gpus.yaml``, ``models.yaml`` and ``instances.csv`` (plus a user models file)."""
    root = Path(catalog_dir) if catalog_dir else default_catalog_dir()
    gpu_path = root / "gpus.yaml"
    gpus_raw = read_yaml(gpu_path)
    gpus: dict[str, Gpu] = {}
    for i, row in enumerate(gpus_raw.get("gpus", [])):
        try:
            g = Gpu.model_validate(row)
        except ValidationError as exc:
            raise CatalogError(f"{gpu_path}: gpus[{i}]{describe_validation_error(exc)}") from None
        gpus[g.id] = g
    models: dict[str, ModelEntry] = {}
    _load_models(root / "models.yaml", models)
    user = user_models if user_models is not None else default_user_catalog()
    if user and Path(user).exists():
        _load_models(Path(user), models)
    inst_path = root / "instances.csv"
    try:
        frame = pd.read_csv(inst_path, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise CatalogError(f"{inst_path}: cannot read ({exc}).") from None
    instances: dict[str, Instance] = {}
    for i, row in enumerate(frame.to_dict("records")):
        clean = {k: (None if v == "" else v) for k, v in row.items()}
        clean["notes"] = clean.get("notes") or ""
        clean["network_source"] = clean.get("network_source") or ""
        try:
            inst = Instance.model_validate(clean)
        except ValidationError as exc:
            raise CatalogError(f"{inst_path}: row {i + 2}{describe_validation_error(exc)}") from None
        if inst.gpu not in gpus:
            raise CatalogError(f"{inst_path}: row {i + 2}: gpu {inst.gpu!r} is not in gpus.yaml.")
        instances[inst.key] = inst
    return Catalog(gpus=gpus, models=models, instances=instances)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def import_hf_config(
    config_path: Path, model_id: str | None = None, output: Path | None = None, force: bool = False
) -> ModelEntry:
    """Turn a local Hugging Face ``config.json`` into a model entry appended to a user catalog.

    An id that the bundled catalog or the user catalog already defines is refused unless ``force``:
    estimates under an existing name must not silently change.
    """
    config: dict[str, Any] = read_json(Path(config_path))
    if not isinstance(config, dict):
        raise FtplanError(f"{config_path}: expected a JSON object.")
    arch = architecture_from_hf(config, str(config_path))
    keep = {
        k: v
        for k, v in config.items()
        if _scalar(v)
        or (isinstance(v, dict) and all(map(_scalar, v.values())))
        or (isinstance(v, list) and all(map(_scalar, v)))  # layer_types, mlp_only_layers
    }
    keep = {k: v for k, v in keep.items() if not k.startswith("_") and k not in ("transformers_version",)}
    name = model_id or _norm(str(config.get("_name_or_path") or Path(config_path).parent.name or "model"))
    entry = ModelEntry(
        id=_norm(name),
        params_official=None,
        source=f"imported from {config_path} ({arch.total_params / 1e9:.3f}B parameters computed)",
        config=keep,
    )
    out = Path(output) if output else default_user_catalog()
    existing: dict[str, Any] = read_yaml(out) if out.exists() else {"schema_version": 1, "models": []}
    if not isinstance(existing, dict) or not isinstance(existing.get("models", []), list):
        raise CatalogError(f"{out}: expected a top-level 'models:' list.")
    if not force:
        bundled: dict[str, ModelEntry] = {}
        _load_models(default_catalog_dir() / "models.yaml", bundled)
        where = (
            "the bundled catalog"
            if entry.id in bundled
            else str(out)
            if any(isinstance(r, dict) and r.get("id") == entry.id for r in existing.get("models", []))
            else None
        )
        if where is not None:
            raise CatalogError(
                f"{config_path}: model id {entry.id!r} is already defined by {where}. "
                "To fix: choose another --id, or give --force to replace it."
            )
    rows = [r for r in existing.get("models", []) if r.get("id") != entry.id]
    rows.append(entry.model_dump(exclude_none=True))
    existing["models"] = rows
    write_text_atomic(out, yaml.safe_dump(existing, sort_keys=False))
    return entry


def host_memory(
    catalog: Catalog, gpu: Gpu | None, gpus_per_node: int, given_gib: float | None
) -> tuple[int | None, str]:
    """RAM per node that offloaded states must fit in, and a note where it is assumed: the RAM given,
    else the least of the catalog's cloud instances with the same GPU and at least as many per node,
    else unknown (None)."""
    if given_gib:
        return int(given_gib * GIB), ""
    if gpu is None:
        return None, ""
    rams = sorted(
        (i.host_memory_gib, i.key)
        for i in catalog.instances.values()
        if i.gpu == gpu.id and i.gpus_per_node >= gpus_per_node and i.host_memory_gib
    )
    if not rams:
        return None, ""
    gib, key = rams[0]
    return int(gib * GIB), f"host memory {gib:g} GiB/node assumed (as {key}; set host_memory_gib)"

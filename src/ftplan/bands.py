"""How sure an estimate is: error bands from ftplan's own validation, and the memory headroom policy.

The evidence is ``catalogs/error_bands.yaml`` (written by ``python benchmarks/error_bands.py --write``):
every validation case with its regime and its signed error, ``estimate / measured − 1``.

* **Memory**: the graded published runs of ``benchmarks/memory_cases.yaml`` (real GPUs, real frameworks:
  the peak a run allocated, reserved or took from the device). A run's true peak is
  ``estimate / (1 + e)``, so the P-quantile of the peak is ``estimate / (1 + e₁₋ₚ)``.
* **Time**: the held-out cases of ``benchmarks/throughput_*.yaml`` (tokens/s; the cases the catalog's
  efficiencies were fitted on are left out, since their errors understate). A job's true duration is
  ``estimate · (1 + e)``, so its P-quantile is ``estimate · (1 + eₚ)``.

A regime is a prefix of a fixed chain of dimensions (memory: method → sharding → offload → precision →
loss → sequence length → nodes → model family; time: dense or MoE → method → precision → pipeline → sequence
length → nodes, a MoE's routed experts, all-to-alls and expert GEMMs being mechanisms a dense model's runs say
nothing of). An estimate takes the deepest prefix of its own chain that holds at least :data:`MIN_CASES`
cases, and says when the next, narrower one held too few. Quantiles are the empirical distribution's (the
inverted CDF, no interpolation), so the P-quantile of a regime of fewer than 1 / (1 − P) cases is its worst
case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftplan.errors import FtplanError
from ftplan.units import GIB

if TYPE_CHECKING:
    from ftplan.arch import Architecture
    from ftplan.memory.setup import Layout, Training

MIN_CASES = 8  # fewer cases than this and a regime's band is its parent's
LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)  # quantiles the data file and JSON list
BAND_COVERAGE = 0.9  # the band printed beside an estimate: its 5% and 95% quantiles

MEMORY_DIMS = ("method", "sharding", "offload", "precision", "loss", "seq", "nodes", "family")
TIME_DIMS = ("model", "method", "precision", "pipeline", "seq", "nodes")

# Sequence-length and node-count buckets (shared with benchmarks/throughput_accuracy.py)
SEQ_BUCKETS = ((1024, "≤ 1k"), (2048, "2k"), (8192, "4k–8k"), (16384, "16k"), (math.inf, "≥ 32k"))
NODE_BUCKETS = ((1, "1 node"), (4, "2–4 nodes"), (16, "5–16 nodes"), (math.inf, "> 16 nodes"))


def bucket(value: float, buckets: tuple[tuple[float, str], ...]) -> str:
    return next(label for bound, label in buckets if value <= bound)


def _method(training: Training) -> str:
    return {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}[training.method.value]


def _seq(training: Training) -> str:
    return f"{bucket(training.seq_len, SEQ_BUCKETS)} tokens"


def sharding_label(gpus: int, zero: int) -> str:
    if gpus == 1:
        return "1 GPU"
    return {0: "replicated", 1: "ZeRO-1/2", 2: "ZeRO-1/2", 3: "ZeRO-3"}[zero]


def memory_regime(arch: Architecture, training: Training, layout: Layout) -> tuple[str, ...]:
    """The job's memory regime, one value per :data:`MEMORY_DIMS`."""
    nodes = math.ceil(layout.gpus / max(1, layout.gpus_per_node))
    return layout_memory_regime(arch, training, layout.gpus, int(layout.zero), layout.offload.value, nodes)


def layout_memory_regime(
    arch: Architecture, training: Training, gpus: int, zero: int, offload: str, nodes: int
) -> tuple[str, ...]:
    """:func:`memory_regime` from a layout's parts (``fit`` searches families of them)."""
    return (
        _method(training),
        sharding_label(gpus, zero),
        "no offload" if offload == "none" else f"offload {offload}",
        training.precision.value,
        f"{training.loss.value} loss",
        _seq(training),
        bucket(nodes, NODE_BUCKETS),
        arch.model_type,
    )


def time_regime(training: Training, pp: int, nodes: int, moe: bool) -> tuple[str, ...]:
    """A job's (or published run's) time regime, one value per :data:`TIME_DIMS` (``moe``: a MoE model's)."""
    return (
        "MoE" if moe else "dense",
        _method(training),
        "FP8" if training.precision.value == "fp8" else "16-bit",
        "pipeline" if pp > 1 else "no pipeline",
        _seq(training),
        bucket(nodes, NODE_BUCKETS),
    )


def quantile(errors: tuple[float, ...], level: float) -> float:
    """The empirical ``level``-quantile of sorted ``errors`` (inverted CDF: no value between two cases)."""
    k = math.ceil(round(level * len(errors), 9))
    return errors[min(len(errors) - 1, max(0, k - 1))]


@dataclass(frozen=True)
class Band:
    """The signed errors of the regime an estimate falls in.

    ``kind`` is ``memory`` (errors of peak bytes) or ``time`` (errors of tokens/s). ``regime`` is the
    prefix used; ``narrower`` names the next, narrower regime of the estimate's own chain and how many
    cases it held (too few), empty when the whole chain was used.
    """

    kind: str
    regime: tuple[str, ...]
    errors: tuple[float, ...]  # sorted
    cases: tuple[str, ...]
    narrower: str = ""
    narrower_cases: int = 0

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def label(self) -> str:
        return " · ".join(self.regime) if self.regime else "all regimes"

    def error(self, level: float) -> float:
        return quantile(self.errors, level)

    def value(self, estimate: float, level: float) -> float:
        """The ``level``-quantile of the true value (bytes, or seconds) given the model's ``estimate``."""
        if self.kind == "memory":
            return estimate / (1 + self.error(1 - level))
        return estimate * (1 + self.error(level))

    def interval(self, estimate: float, coverage: float = BAND_COVERAGE) -> tuple[float, float]:
        tail = (1 - coverage) / 2
        return self.value(estimate, tail), self.value(estimate, 1 - tail)

    def quantiles(self, estimate: float) -> dict[str, float]:
        """The true value at each of :data:`LEVELS` (the JSON form)."""
        return {f"p{round(level * 100):02d}": self.value(estimate, level) for level in LEVELS}

    def fit_probability(self, estimate: float, capacity: float) -> float:
        """Share of the regime's cases whose error would keep a peak of ``estimate`` within ``capacity``."""
        need = estimate / capacity - 1  # fits when 1 + e ≥ estimate / capacity
        return sum(e >= need - 1e-12 for e in self.errors) / self.n

    def fit_probabilities(self, estimates: np.ndarray, capacity: float) -> np.ndarray:
        """:meth:`fit_probability` of every peak in ``estimates`` at once (the errors are sorted: the cases
        at or above each one's need are those from its left insertion point on)."""
        need = np.asarray(estimates, dtype=float) / capacity - 1
        below = np.searchsorted(np.asarray(self.errors), need - 1e-12, side="left")
        return (self.n - below) / self.n

    def source(self) -> str:
        """Where the band comes from, for a line of output."""
        what = "published runs" if self.kind == "memory" else "published throughput cases"
        text = f"{self.n} {what} of {self.label}"
        if self.narrower:
            text += f"; {self.narrower_cases} of {self.narrower}: too few"
        return text


@dataclass(frozen=True, eq=False)  # (hashed by identity: bands are cached per loaded file)
class ErrorBands:
    """Every validation case with its regime and signed error, per kind (``memory``, ``time``)."""

    cases: dict[str, tuple[tuple[str, tuple[str, ...], float], ...]]

    def band(self, kind: str, regime: tuple[str, ...]) -> Band:
        return _band(self, kind, regime)

    def regimes(self, kind: str) -> list[tuple[tuple[str, ...], int]]:
        """Every regime (prefix) with at least :data:`MIN_CASES` cases and its case count, in chain order."""
        counts: dict[tuple[str, ...], int] = {}
        for _, key, _ in self.cases[kind]:
            for depth in range(len(key) + 1):
                counts[key[:depth]] = counts.get(key[:depth], 0) + 1
        return sorted(((k, n) for k, n in counts.items() if n >= MIN_CASES or not k), key=lambda kv: kv[0])

    def errors_of(self, kind: str, regime: tuple[str, ...]) -> tuple[tuple[float, ...], tuple[str, ...]]:
        rows = sorted((e, c) for c, key, e in self.cases[kind] if key[: len(regime)] == regime)
        return tuple(e for e, _ in rows), tuple(c for _, c in rows)


@cache
def _band(bands: ErrorBands, kind: str, regime: tuple[str, ...]) -> Band:
    """The deepest prefix of ``regime`` holding at least :data:`MIN_CASES` cases (cached per loaded file)."""
    chosen, narrower, narrower_n = (), "", 0
    for depth in range(1, len(regime) + 1):
        n = sum(key[:depth] == regime[:depth] for _, key, _ in bands.cases[kind])
        if n < MIN_CASES:
            narrower, narrower_n = " · ".join(regime[:depth]), n
            break
        chosen = regime[:depth]
    errors, cases = bands.errors_of(kind, chosen)
    return Band(kind, chosen, errors, cases, narrower, narrower_n)


def default_bands_path() -> Path:
    from ftplan.catalog import default_catalog_dir

    return default_catalog_dir() / "error_bands.yaml"


@cache
def load_bands(path: Path | None = None) -> ErrorBands:
    """The error bands data file (default: the catalog's ``error_bands.yaml``)."""
    from ftplan.io import read_yaml

    p = Path(path) if path else default_bands_path()
    raw = read_yaml(p)
    dims = {"memory": MEMORY_DIMS, "time": TIME_DIMS}
    cases: dict[str, tuple] = {}
    for kind, names in dims.items():
        rows = []
        for i, row in enumerate(raw.get(kind, {}).get("cases", [])):
            try:
                key = tuple(str(row["regime"][d]) for d in names)
                rows.append((str(row["case"]), key, float(row["error"])))
            except (KeyError, TypeError, ValueError):
                raise FtplanError(
                    f"{p}: {kind}.cases[{i}]: needs case, error and a regime with {', '.join(names)}. "
                    "To fix: regenerate it with python benchmarks/error_bands.py --write"
                ) from None
        if not rows:
            raise FtplanError(
                f"{p}: no {kind} cases. To fix: regenerate it with python benchmarks/error_bands.py --write"
            )
        cases[kind] = tuple(rows)
    return ErrorBands(cases=cases)


def memory_band(arch: Architecture, training: Training, gpus: int, zero: int, offload: str, nodes: int) -> Band:
    """The error band of a layout's device memory."""
    return load_bands().band("memory", layout_memory_regime(arch, training, gpus, zero, offload, nodes))


def time_band(training: Training, pp: int, nodes: int, moe: bool) -> Band:
    """The error band of a run's duration (``moe``: a MoE model's)."""
    return load_bands().band("time", time_regime(training, pp, nodes, moe))


# ---- the headroom policy ----------------------------------------------------------------------------

# The default: a layout fits when the 99% quantile of its peak fits, which for every regime of fewer than
# 100 published runs is the worst underestimate those runs show. Planned so, none of the published runs
# ftplan holds would have run out of memory (benchmarks/memory_accuracy.py prints the check).
DEFAULT_CONFIDENCE = 0.99


@dataclass(frozen=True)
class HeadroomPolicy:
    """How much memory a layout must leave free: exactly one of

    * ``confidence``: the ``confidence``-quantile of the peak (the estimate over its regime's error band) fits;
    * ``margin``: the estimate fits in ``1 − margin`` of the card;
    * ``margin_bytes``: the estimate fits with ``margin_bytes`` to spare.
    """

    confidence: float | None = DEFAULT_CONFIDENCE
    margin: float | None = None
    margin_bytes: int | None = None

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.confidence, self.margin, self.margin_bytes)]
        if sum(given) != 1:
            raise ValueError("a headroom policy has exactly one of confidence, margin, margin_bytes")

    @property
    def label(self) -> str:
        if self.confidence is not None:
            return f"memory_confidence {self.confidence:g}"
        if self.margin is not None:
            return f"memory_margin {self.margin:g} of the card"
        return f"memory_margin {self.margin_bytes / GIB:g} GiB"

    def as_dict(self) -> dict[str, float | str]:
        if self.confidence is not None:
            return {"memory_confidence": self.confidence}
        if self.margin is not None:
            return {"memory_margin": self.margin}
        return {"memory_margin": f"{self.margin_bytes / GIB:g} GiB"}

    def required(self, device_bytes: Any, band: Band) -> Any:
        """The bytes a card must hold for ``device_bytes`` (a number or an array) estimated to fit under this
        policy."""
        if self.confidence is not None:
            return band.value(device_bytes, self.confidence)
        if self.margin is not None:
            return device_bytes / (1 - self.margin)
        return device_bytes + float(self.margin_bytes or 0)


def parse_margin(value: float | str, where: str) -> HeadroomPolicy:
    """``memory_margin``: a fraction of the card (``0.1``) or an amount (``"4 GiB"``, ``"4096 MiB"``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value < 1:
            raise FtplanError(
                f"{where}: memory_margin {value} is not a fraction of the card in [0, 1). "
                "To fix: give e.g. 0.1, or an amount such as '6 GiB'"
            )
        return HeadroomPolicy(confidence=None, margin=float(value))
    text = str(value).strip()
    units = {"gib": GIB, "mib": 2**20, "gb": 10**9, "mb": 10**6}
    number, _, unit = text.partition(" ")
    if not unit:
        for u in units:
            if text.lower().endswith(u):
                number, unit = text[: -len(u)], u
                break
    try:
        amount = float(number) * units[unit.strip().lower()]
    except (KeyError, ValueError):
        raise FtplanError(
            f"{where}: memory_margin {value!r} is neither a fraction of the card nor an amount. "
            "To fix: give e.g. 0.1 or '6 GiB' (GiB, MiB, GB or MB)"
        ) from None
    if not 0 <= amount <= 1024 * GIB:
        raise FtplanError(f"{where}: memory_margin {value!r} is out of range. To fix: give 0 to 1024 GiB")
    return HeadroomPolicy(confidence=None, margin_bytes=int(amount))


def make_policy(confidence: float | None, margin: float | str | None, where: str) -> HeadroomPolicy | None:
    """The policy one level (a file or the command line) states, or ``None`` when it states none."""
    if confidence is not None and margin is not None:
        raise FtplanError(f"{where}: memory_confidence and memory_margin both given. To fix: keep one of them")
    if confidence is not None:
        if not 0 < confidence < 1:
            raise FtplanError(
                f"{where}: memory_confidence {confidence} is not a probability in (0, 1). To fix: give e.g. 0.9"
            )
        return HeadroomPolicy(confidence=float(confidence))
    if margin is not None:
        return parse_margin(margin, where)
    return None


def effective_policy(*stated: HeadroomPolicy | None) -> HeadroomPolicy:
    """The first policy stated (command line, job, scenario), else the default."""
    return next((p for p in stated if p is not None), HeadroomPolicy())


@dataclass(frozen=True)
class MemoryVerdict:
    """A device-memory estimate with its band, under a headroom policy, on a card of ``capacity_bytes``."""

    policy: HeadroomPolicy
    band: Band
    estimate_bytes: float
    capacity_bytes: float | None
    host_fits: bool = True  # the offloaded states fit the node's RAM (or it is unknown)

    @property
    def required_bytes(self) -> float:
        return self.policy.required(self.estimate_bytes, self.band)

    @property
    def fits(self) -> bool | None:
        """The policy's bytes fit the card and the host states its RAM (None without a card)."""
        if self.capacity_bytes is None:
            return None
        return self.required_bytes <= self.capacity_bytes and self.host_fits

    @property
    def probability(self) -> float | None:
        return (
            None if self.capacity_bytes is None else self.band.fit_probability(self.estimate_bytes, self.capacity_bytes)
        )

    def chance_text(self) -> str:
        """The probability of fitting, with the count it rests on."""
        p = self.probability or 0.0
        return f"chance it fits: {p:.0%} ({round(p * self.band.n)} of {self.band.n} runs of its band)"

    def band_text(self) -> str:
        lo, hi = self.band.interval(self.estimate_bytes)
        return (
            f"{self.estimate_bytes / GIB:.2f} GiB ({BAND_COVERAGE:.0%} band {lo / GIB:.2f}–{hi / GIB:.2f} GiB, "
            f"from {self.band.source()})"
        )

    def as_dict(self) -> dict[str, object]:
        lo, hi = self.band.interval(self.estimate_bytes)
        return {
            "policy": self.policy.as_dict(),
            "required_bytes": round(self.required_bytes),
            "fits": self.fits,
            "fit_probability": self.probability,
            "band": {
                "coverage": BAND_COVERAGE, "low_bytes": round(lo), "high_bytes": round(hi),
                "quantiles_bytes": {k: round(v) for k, v in self.band.quantiles(self.estimate_bytes).items()},
                "regime": self.band.label, "cases": self.band.n, "source": self.band.source(),
            },
        }  # fmt: skip

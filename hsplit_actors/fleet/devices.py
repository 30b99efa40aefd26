"""Device and server profiles, and the built-in catalogue (`catalogue.yaml`, data rather than code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from hsplit_actors.errors import ScenarioError

CATALOGUE = Path(__file__).with_name("catalogue.yaml")
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # model.dtype -> the peak it computes at


@dataclass(frozen=True)
class Hardware:
    """What the default timing model needs of one device: peak FLOP/s per precision, the share of it large matmuls
    sustain, memory bandwidth and a fixed cost per kernel. A user-defined profile gives `flops` (sustained) directly
    instead of peaks."""

    name: str
    memory_gb: float
    peak: dict[str, float] = field(default_factory=dict)
    utilisation: float | dict[str, float] = 1.0  # one figure, or one per precision
    mem_gbps: float = 100.0
    launch_us: float = 25.0
    flops: float | None = None  # a sustained rate given directly (user profiles): every precision

    def sustained(self, dtype: str) -> float:
        """Sustained FLOP/s for a model in `dtype`; a precision the device lacks is refused in one line."""
        if self.flops is not None:
            return self.flops
        precision = PRECISION[dtype]
        if precision not in self.peak:
            raise ScenarioError(f"{self.name} computes in {', '.join(sorted(self.peak))}, not {precision}; "
                                f"use model.dtype {_dtype_of(sorted(self.peak)[0])} or another device",
                                field="model.dtype")
        share = self.utilisation[precision] if isinstance(self.utilisation, dict) else self.utilisation
        return self.peak[precision] * share


def _dtype_of(precision: str) -> str:
    return next(d for d, p in PRECISION.items() if p == precision)


@dataclass(frozen=True)
class DeviceProfile(Hardware):
    """A client device type: compute (see Hardware), memory budget and network link."""

    uplink_mbps: float = 45.0
    downlink_mbps: float = 90.0
    latency_ms: float = 15.0


@dataclass(frozen=True)
class ServerProfile(Hardware):
    """One server GPU type; the server has `gpus` of them."""


def server_rates(spec, dtype: str):
    """The server GPU's Rates for the default timing model: the scenario's `server:` figures where it gives them,
    else its catalogue profile's at `dtype`."""
    from hsplit_actors.timing.roofline import Rates

    _, servers = load_catalogue()
    profile = servers[spec.profile]
    flops = spec.flops or profile.sustained(dtype)
    return Rates.of(flops, spec.mem_gbps or profile.mem_gbps,
                    profile.launch_us if spec.launch_us is None else spec.launch_us)


def _fields(raw: dict) -> dict:
    """YAML 1.1 reads 1.4e11 (no exponent sign) as a string: numbers, and the peaks as numbers."""
    return {key: ({p: float(v) for p, v in value.items()} if isinstance(value, dict) else float(value))
            for key, value in raw.items()}


@cache
def load_catalogue() -> tuple[dict[str, DeviceProfile], dict[str, ServerProfile]]:
    """The built-in device and server profiles, keyed by name."""
    raw = yaml.safe_load(CATALOGUE.read_text())
    devices = {name: DeviceProfile(name=name, **_fields(f)) for name, f in raw["devices"].items()}
    servers = {name: ServerProfile(name=name, **_fields(f)) for name, f in raw["servers"].items()}
    return devices, servers

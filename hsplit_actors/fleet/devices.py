"""Device and server profiles, and the built-in catalogue (`catalogue.yaml`, data rather than code)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CATALOGUE = Path(__file__).with_name("catalogue.yaml")


@dataclass(frozen=True)
class DeviceProfile:
    """A client device type: sustained training FLOP/s, memory budget and network link."""

    name: str
    flops: float
    memory_gb: float
    uplink_mbps: float
    downlink_mbps: float
    latency_ms: float


@dataclass(frozen=True)
class ServerProfile:
    """One server GPU type; the server has `gpus` of them."""

    name: str
    flops: float
    memory_gb: float


@cache
def load_catalogue() -> tuple[dict[str, DeviceProfile], dict[str, ServerProfile]]:
    """The built-in device and server profiles, keyed by name."""
    raw = yaml.safe_load(CATALOGUE.read_text())

    def numbers(fields: dict) -> dict:  # YAML 1.1 reads 1.4e11 (no exponent sign) as a string
        return {key: float(value) for key, value in fields.items()}

    devices = {name: DeviceProfile(name=name, **numbers(f)) for name, f in raw["devices"].items()}
    servers = {name: ServerProfile(name=name, **numbers(f)) for name, f in raw["servers"].items()}
    return devices, servers

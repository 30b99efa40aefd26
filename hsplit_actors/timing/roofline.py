"""The default timing model, for devices without a measured profile: roofline plus overhead.

    seconds = max(FLOPs / sustained FLOP/s, bytes / memory bandwidth) + kernels x launch cost

Why this form: a phase is bound by arithmetic or by memory traffic, whichever is slower (the roofline), and on a
fast GPU the small jobs of split fine-tuning (a few blocks, a batch of 8-16) are bound by neither but by the fixed
cost of launching each kernel through PyTorch: the H200 profiles show MiniLM's block forward at 0.5-1 ms whatever
the batch (tens of microseconds per kernel), which a FLOPs-only model prices at microseconds (18x too little in
MEASURED.md's run). The constants per device are data (fleet/catalogue.yaml): peaks per precision from datasheets,
utilisation and launch cost fitted to measured profiles by bench/timing_default_fit.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    """One device's side of the model: sustained FLOP/s (at the scenario's precision), memory bandwidth in bytes
    per second, and the fixed cost of one kernel in seconds."""

    flops: float
    bytes_per_s: float
    launch_s: float

    @classmethod
    def of(cls, flops: float, mem_gbps: float, launch_us: float) -> Rates:
        return cls(float(flops), float(mem_gbps) * 1e9, float(launch_us) * 1e-6)


def seconds(flops: float, bytes_: float, kernels: float, rates: Rates) -> float:
    """How long a phase of `flops`, `bytes_` of memory traffic and `kernels` launches takes on `rates`."""
    return max(flops / rates.flops, bytes_ / rates.bytes_per_s) + kernels * rates.launch_s

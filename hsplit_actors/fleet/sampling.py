"""Materialise a scenario's fleet: one row per device, columnar (numpy) so 100k devices cost nothing noticeable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hsplit_actors.errors import ScenarioError
from hsplit_actors.fleet.devices import DeviceProfile, load_catalogue
from hsplit_actors.scenario.schema import ChoiceDist, LogNormalDist, Positive, Scenario, UniformDist, Windows

FIELDS = ("flops", "memory_gb", "uplink_mbps", "downlink_mbps", "latency_ms", "mem_gbps", "launch_us")


@dataclass
class Fleet:
    """Per-device columns. `windows[group[i]]` holds device i's on-line windows, or None (always on-line)."""

    device: np.ndarray  # profile name per device (object array)
    group: np.ndarray  # index of the fleet entry it came from
    flops: np.ndarray
    memory_gb: np.ndarray
    uplink_mbps: np.ndarray
    downlink_mbps: np.ndarray
    latency_ms: np.ndarray
    mem_gbps: np.ndarray  # memory bandwidth (the default timing model's bytes term)
    launch_us: np.ndarray  # fixed cost per kernel (its overhead term)
    participation: np.ndarray  # probability of taking part in a round
    priority: np.ndarray
    windows: list[Windows | None]
    timing: list | None = None  # per fleet entry: its measured profile reference (None: FLOPs model)

    def __len__(self) -> int:
        return len(self.device)

    @classmethod
    def explicit(cls, device: list[str], flops: list[float], memory_gb: list[float],
                 uplink_mbps: list[float] | None = None, downlink_mbps: list[float] | None = None,
                 latency_ms: list[float] | None = None) -> Fleet:
        """A fleet given column by column (for notebooks and tests); always on-line, one group per device."""
        n = len(device)

        def column(values, default: float) -> np.ndarray:
            return np.asarray(values if values is not None else [default] * n, dtype=float)

        return cls(np.array(device, dtype=object), np.arange(n), column(flops, 0), column(memory_gb, 0),
                   column(uplink_mbps, 50.0), column(downlink_mbps, 100.0), column(latency_ms, 15.0),
                   column(None, 1e6), column(None, 0.0), np.ones(n), np.zeros(n, dtype=np.int64), [None] * n)

    def online(self, client: int, t: float) -> bool:
        """Whether device `client` is on-line at virtual time `t` (always, unless it has windows)."""
        return self.group_online(int(self.group[client]), t)

    def group_online(self, group: int, t: float) -> bool:
        """Whether the devices of fleet entry `group` are on-line at virtual time `t`."""
        spec = self.windows[group]
        if spec is None:
            return True
        if spec.period is not None:
            t = t % spec.period
        return any(start <= t < end for start, end in spec.windows)


def _sample(value: Positive, n: int, rng: np.random.Generator) -> np.ndarray | float:
    if isinstance(value, UniformDist):
        return rng.uniform(value.uniform[0], value.uniform[1], n)
    if isinstance(value, LogNormalDist):
        return value.lognormal.median * exp(value.lognormal.sigma * rng.standard_normal(n))
    if isinstance(value, ChoiceDist):
        options = np.array(list(value.choice), dtype=float)
        weights = np.array(list(value.choice.values()), dtype=float)
        return rng.choice(options, size=n, p=weights / weights.sum())
    return float(value)  # a constant


def _in_range(values: np.ndarray | float, spec: Positive, field: str) -> np.ndarray | float:
    """What a lognormal drew, if every device can have it. Uniform bounds, choices and constants are positive and
    finite by the schema; a lognormal with a huge sigma leaves the float range (0 or infinite bandwidth, FLOP/s,
    memory), which would end in a division by zero far from the scenario."""
    if not isinstance(spec, LogNormalDist):
        return values
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ScenarioError(f"lognormal {{median: {spec.lognormal.median:g}, sigma: {spec.lognormal.sigma:g}}} drew "
                            f"{values[bad][0]:g} for {int(bad.sum())} of {values.size} devices, beyond the float "
                            "range; lower sigma", field=field)
    return values


def exp(x: np.ndarray) -> np.ndarray:
    """e^x with the C library's scalar exp, not numpy's: on CPUs with AVX-512, `np.exp` takes a vectorised path that
    differs from the scalar one in the last bit, so one seed would sample another fleet there."""
    return np.fromiter(map(_exp, x.tolist()), dtype=np.float64, count=len(x))


def _exp(v: float) -> float:
    """`math.exp`, infinite past the float range as `np.exp` is (math's raises: a huge sigma was a traceback)."""
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


class _Column:
    """A fleet column built entry by entry; a constant run costs a (value, count) pair, not an array, so a fleet
    of 140,000 one-device entries is built in a fraction of a second."""

    def __init__(self, dtype: Any):
        self.dtype = dtype
        self.parts: list[Any] = []
        self.counts: list[int] = []

    def add(self, part: Any, count: int) -> None:
        self.parts.append(part)
        self.counts.append(count)

    def array(self) -> np.ndarray:
        if not any(isinstance(p, np.ndarray) for p in self.parts):
            return np.repeat(np.array(self.parts, dtype=self.dtype), self.counts)
        return np.concatenate([p.astype(self.dtype, copy=False) if isinstance(p, np.ndarray)
                               else np.full(c, p, dtype=self.dtype) for p, c in zip(self.parts, self.counts,
                                                                                    strict=True)])


def build_fleet(scenario: Scenario) -> Fleet:
    """Every device of the fleet, sampled with the scenario seed (same seed, same fleet)."""
    rng = np.random.default_rng(scenario.seed)
    catalogue, _ = load_catalogue()
    profiles: dict[str, DeviceProfile] = dict(catalogue)
    for name, spec in scenario.profiles.items():
        profiles[name] = DeviceProfile(name=name, **spec.model_dump())
    dtype = scenario.model.dtype

    def figure(profile: DeviceProfile, field: str) -> float:
        return profile.sustained(dtype) if field == "flops" else float(getattr(profile, field))

    columns = {**{f: _Column(float) for f in (*FIELDS, "participation")}, "device": _Column(object),
               "group": _Column(np.int32), "priority": _Column(np.int64)}
    windows: list[Windows | None] = []
    for g, entry in enumerate(scenario.fleet):
        n = entry.count
        if isinstance(entry.profile, str):
            names: Any = entry.profile
        else:
            options = list(entry.profile.choice)
            weights = np.array(list(entry.profile.choice.values()), dtype=float)
            names = np.array(options, dtype=object)[rng.choice(len(options), size=n, p=weights / weights.sum())]
        columns["device"].add(names, n)
        for field in FIELDS:
            override = getattr(entry, field)
            if override is not None:
                columns[field].add(_in_range(_sample(override, n, rng), override, f"fleet[{g}].{field}"), n)
            elif isinstance(names, str):
                columns[field].add(figure(profiles[names], field), n)
            else:
                columns[field].add(np.array([figure(profiles[name], field) for name in names], dtype=float), n)
        columns["group"].add(g, n)
        is_windows = isinstance(entry.availability, Windows)
        columns["participation"].add(1.0 if is_windows else entry.availability, n)
        columns["priority"].add(entry.priority, n)
        windows.append(entry.availability if is_windows else None)
    return Fleet(windows=windows, timing=[entry.timing for entry in scenario.fleet],
                 **{k: c.array() for k, c in columns.items()})

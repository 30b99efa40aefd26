"""The baselines of bench/plan_throughput.py time the job the engine runs: a ratio against them only means
something while they agree with it (and run at all)."""

from __future__ import annotations

import pytest

from bench.plan_throughput import once


@pytest.mark.parametrize("aggregation", ["sync", "async"])
def test_every_bare_pool_ends_at_the_same_virtual_time(aggregation: str) -> None:
    ends = {mode: once(mode, 60, 3, aggregation)["virtual_end"]
            for mode in ("bare-reserve", "bare-heap", "bare-simpy")}
    assert len(set(ends.values())) == 1, ends
    if aggregation == "sync":  # the engine's rounds, the same end to the bit
        assert once("engine", 60, 3, aggregation)["virtual_end"] == ends["bare-reserve"]

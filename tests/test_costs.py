"""What a run costs beyond its training steps, recorded for equal-time tables: precise BN's seconds, and the seconds
its soft-label cache took to build, charged alike to every run that reads the cache."""

from __future__ import annotations

from sskt.engine import train
from sskt.rundir import RunDir


def test_cache_build_and_precise_bn_seconds_are_recorded(colour_cfg, tmp_path) -> None:
    first = colour_cfg(tmp_path / "a", "sskt")
    first.cache.enabled, first.cache.views, first.cache.dir = True, 2, str(tmp_path / "cache")
    first.epochs, first.eval_every = 2, 1
    summary = train(first)
    assert summary["cache_build_seconds"] > 0
    records = RunDir(first.out).read_records()
    assert 0 < records[0]["precise_bn_seconds"] < records[1]["precise_bn_seconds"], "a running total"
    assert summary["precise_bn_seconds"] == records[-1]["precise_bn_seconds"]

    second = colour_cfg(tmp_path / "b", "sskt")
    second.cache.enabled, second.cache.views, second.cache.dir = True, 2, str(tmp_path / "cache")
    second.epochs, second.seed = 1, first.seed
    assert train(second)["cache_build_seconds"] == summary["cache_build_seconds"], "read back, not re-timed"

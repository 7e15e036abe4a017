"""The exact soft-label cache: hits equal a fresh source forward on the stored view, every key component
invalidates, an interrupted build resumes to identical content, and training replays the cache end to end."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sskt.config import TrainConfig
from sskt.data import DatasetSpec, TensorImageSet, TrainStream
from sskt.errors import UserError
from sskt.sources import SOURCES, Pretrained, Source
from sskt.sources.cache import CacheSet, SoftLabelCache, build_cache, cache_key, expand_topk, open_cache, plan_for

TINY = "tinycache"


def tiny_net(seed: int = 0, classes: int = 7) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, classes),
    )  # fmt: skip


if TINY not in SOURCES:

    @SOURCES.register(TINY)
    def _tiny(weights: str | None = None) -> Pretrained:
        """A 7-class conv net with fixed random weights: a source that costs nothing."""
        return Pretrained(tiny_net(), (0.4, 0.4, 0.4), (0.2, 0.3, 0.25), 7)


def toy_spec(name: str = "toy", n_per_class: int = 6, pixels_seed: int = 5) -> DatasetSpec:
    g = torch.Generator().manual_seed(pixels_seed)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 1, 8, 8), dtype=torch.uint8, generator=g)
    train = TensorImageSet(images, labels)
    return DatasetSpec(name, train, TensorImageSet(images[:6], labels[:6]), 3, (0.5,) * 3, (0.25,) * 3, 8)


def tiny_source(spec: DatasetSpec, seed: int = 0, input_size: int | None = 12, bn_mode: str = "eval") -> Source:
    return Source(tiny_net(seed), name=TINY, num_classes=7, mean=(0.4,) * 3, std=(0.2,) * 3,
                  target_mean=spec.mean, target_std=spec.std, input_size=input_size, bn_mode=bn_mode)  # fmt: skip


def cache_cfg(tmp_path: Path, **cache) -> TrainConfig:
    cfg = TrainConfig(seed=1, progress=False)
    cfg.data.labels_per_class, cfg.data.batch_size = 4, 5
    cfg.cache.dir, cfg.cache.views = str(tmp_path / "cache"), 3
    for k, v in cache.items():
        setattr(cfg.cache, k, v)
    return cfg


def opened(cfg: TrainConfig, spec: DatasetSpec, src: Source, **kw) -> CacheSet:
    return open_cache(cfg, spec, TrainStream(spec, cfg), {TINY: src}, show_progress=False, **kw)


def fresh(spec: DatasetSpec, stream: TrainStream, src: Source, idx: torch.Tensor, params: torch.Tensor):
    """The source's logits on the view that ``params`` describe, recomputed from the raw images."""
    x = stream.normalize(stream.augment.apply(spec.train.images[idx], params))
    return src(x)


def test_cache_hit_is_bit_identical_to_a_fresh_forward_on_the_stored_view(tmp_path: Path) -> None:
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    src, stream = tiny_source(spec), TrainStream(spec, cfg)
    cache = opened(cfg, spec, src)
    idx = stream.labeled_indices
    for view in range(cfg.cache.views):
        params, soft = cache.read(idx, torch.full((len(idx),), view))
        assert soft[TINY].dtype == torch.float16
        assert torch.equal(soft[TINY], fresh(spec, stream, src, idx, params).half())
    all_params = cache.read(idx.repeat(3), torch.arange(3).repeat_interleave(len(idx)))[0]
    assert len({tuple(p) for p in all_params.tolist()}) > len(idx)  # the K views differ


def test_topk_keeps_exact_topk_probabilities_and_the_remaining_mass(tmp_path: Path) -> None:
    spec, cfg = toy_spec(), cache_cfg(tmp_path, topk=3, views=2)
    src, stream = tiny_source(spec), TrainStream(spec, cfg)
    cache = opened(cfg, spec, src)
    idx = stream.labeled_indices
    params, soft = cache.read(idx, torch.zeros(len(idx), dtype=torch.long))
    p_true = fresh(spec, stream, src, idx, params).softmax(1)
    p_cached = soft[TINY].softmax(1)
    top_true, classes = p_true.topk(3, dim=1)
    assert torch.allclose(p_cached.gather(1, classes), top_true, atol=2e-3)
    assert torch.allclose(p_cached.sum(1), torch.ones(len(idx)), atol=1e-5)
    dense = expand_topk(torch.tensor([[2.0]]), torch.tensor([[1]]), torch.tensor([0.5]), 3)
    assert dense.tolist() == [[0.5, 2.0, 0.5]]


def changed(tmp_path: Path, what: str) -> tuple[TrainConfig, DatasetSpec, Source]:
    """A configuration, dataset and source that differ from the base in exactly ``what``."""
    cfg, spec = cache_cfg(tmp_path), toy_spec()
    src = tiny_source(spec)
    if what == "weights":
        src = tiny_source(spec, seed=1)
    elif what == "input_size":
        src = tiny_source(spec, input_size=16)
    elif what == "bn_mode":
        src = tiny_source(spec, bn_mode="train")
    elif what == "dataset":
        spec = toy_spec("toy2")
        src = tiny_source(spec)
    elif what == "subset_seed":
        cfg.data.subset_seed = 7
    elif what == "labels_per_class":
        cfg.data.labels_per_class = 3
    elif what == "augment":
        cfg.data.augment = "none"
    elif what == "views":
        cfg.cache.views = 4
    elif what == "topk":
        cfg.cache.topk = 2
    elif what == "unlabeled":
        cfg.data.unlabeled, cfg.data.unlabeled_ratio = "rest", 1
    elif what == "pixels":  # same name, layout and labels; other images
        spec = toy_spec(pixels_seed=6)
    elif what == "val_per_class":
        cfg.data.val_per_class = 1
    elif what == "crop_padding":
        cfg.data.crop_padding = 2
    elif what == "dtype":
        cfg.cache.dtype = "float32"
    return cfg, spec, src


KEY_PARTS = ["weights", "input_size", "bn_mode", "dataset", "subset_seed", "labels_per_class", "augment", "views",
             "topk", "unlabeled", "pixels", "val_per_class", "crop_padding", "dtype"]  # fmt: skip


@pytest.mark.parametrize("what", KEY_PARTS)
def test_changing_any_key_component_never_reuses_old_logits(tmp_path: Path, what: str) -> None:
    cfg, spec, src = changed(tmp_path, what)
    base_cfg, base_spec, base_src = changed(tmp_path, "nothing")
    opened(base_cfg, base_spec, base_src)
    base_key = cache_key(base_cfg, base_spec, TrainStream(base_spec, base_cfg), {TINY: base_src})
    key = cache_key(cfg, spec, TrainStream(spec, cfg), {TINY: src})
    assert key != base_key
    with pytest.raises(UserError):  # building not allowed: a clear error, never the base cache
        opened(cfg, spec, src, build=False)
    if what != "bn_mode":
        assert opened(cfg, spec, src).paths != opened(base_cfg, base_spec, base_src).paths


def test_batch_statistics_sources_are_refused_with_a_reason(tmp_path: Path) -> None:
    spec = toy_spec()
    with pytest.raises(UserError, match="bn_mode='train'"):
        opened(cache_cfg(tmp_path), spec, tiny_source(spec, bn_mode="train"))


def test_missing_cache_without_build_names_what_differs(tmp_path: Path) -> None:
    spec = toy_spec()
    opened(cache_cfg(tmp_path), spec, tiny_source(spec))
    with pytest.raises(UserError, match="views"):
        opened(cache_cfg(tmp_path, views=5), spec, tiny_source(spec), build=False)


def arrays(path: Path) -> dict[str, np.ndarray]:
    return {f.name: np.load(f) for f in sorted(path.glob("*.npy"))}


def test_killed_build_resumes_to_identical_content(tmp_path: Path) -> None:
    spec = toy_spec()
    cfg_a, cfg_b = cache_cfg(tmp_path / "a"), cache_cfg(tmp_path / "b")
    cfg_a.data.unlabeled = cfg_b.data.unlabeled = "rest"
    cfg_a.data.unlabeled_ratio = cfg_b.data.unlabeled_ratio = 1
    plan_a = plan_for(cfg_a, spec, TrainStream(spec, cfg_a), {TINY: tiny_source(spec)})
    build_cache(plan_a, chunk=4, show_progress=False)

    def kill(done: int, total: int) -> None:
        raise KeyboardInterrupt(f"killed after {done}/{total}")

    plan_b = plan_for(cfg_b, spec, TrainStream(spec, cfg_b), {TINY: tiny_source(spec)})
    with pytest.raises(KeyboardInterrupt):
        build_cache(plan_b, chunk=4, on_chunk=kill, show_progress=False)
    partial = plan_b.path.with_name(plan_b.path.name + ".partial")
    assert not plan_b.path.exists() and json.loads((partial / "progress.json").read_text())["done"] == 4
    seen = []
    build_cache(plan_b, chunk=4, on_chunk=lambda d, t: seen.append(d), show_progress=False)
    assert seen[0] == 8 and seen[-1] == len(spec.train)  # resumed after the first chunk
    a, b = arrays(plan_a.path), arrays(plan_b.path)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_stream_replays_stored_views_and_their_logits(tmp_path: Path) -> None:
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    src, stream = tiny_source(spec), TrainStream(spec, cfg)
    stream.set_view_provider(opened(cfg, spec, src))
    for batch in stream.epoch(0):
        assert torch.equal(batch.soft[TINY], src(batch.images).half())  # the target sees what the source saw


def test_training_with_the_cache_runs_end_to_end(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    from sskt.config import SourceConfig
    from sskt.engine import train

    cfg = tiny_cfg
    cfg.epochs, cfg.method.name, cfg.sources = 1, "sskt", [SourceConfig(name=TINY)]
    cfg.data.labels_per_class = 5
    cfg.cache.enabled, cfg.cache.views, cfg.cache.dir = True, 2, str(tmp_path / "cache")
    summary = train(cfg)
    assert 0 <= summary["final"]["test_acc"] <= 100
    assert len(list((tmp_path / "cache").glob("fashion_mnist-*"))) == 1
    cfg.out, cfg.cache.build, cfg.cache.views = str(tmp_path / "run2"), False, 3
    with pytest.raises(UserError, match="cache build"):
        train(cfg)


def _colour_tree(root: Path, shade: int) -> Path:
    """An imagefolder root (train/ and test/, classes a and b, 3 images each) of flat ``shade``-tinted 8 px PNGs."""
    from PIL import Image

    for split in ("train", "test"):
        for c, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                pixels = np.full((8, 8, 3), (shade + 40 * c + i) % 256, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def _folder_key(root: Path, tmp_path: Path, unlabeled: Path | None = None) -> dict:
    from sskt.data import build_dataset

    cfg = cache_cfg(tmp_path)
    cfg.data.name, cfg.data.root, cfg.data.image_size, cfg.data.labels_per_class = "imagefolder", str(root), 8, 2
    if unlabeled is not None:
        cfg.data.unlabeled, cfg.data.unlabeled_ratio = str(unlabeled), 1
    spec = build_dataset(cfg.data)
    return cache_key(cfg, spec, TrainStream(spec, cfg), {TINY: tiny_source(spec)})


def test_folders_with_one_layout_and_other_pixels_never_share_a_cache(tmp_path: Path) -> None:
    first, second = _colour_tree(tmp_path / "one", 10), _colour_tree(tmp_path / "two", 90)
    key = _folder_key(first, tmp_path)
    assert key == _folder_key(first, tmp_path), "the key is stable while nothing changes"
    assert key["pools"]["train"]["root"] == str((first / "train").resolve())
    assert _folder_key(second, tmp_path) != key
    # A changed file (new pixels, hence new size or mtime) invalidates the cache of the folder it is in.
    from PIL import Image

    victim = first / "train" / "a" / "1.png"
    before = victim.stat().st_mtime_ns
    Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8)).save(victim)
    os.utime(victim, ns=(before + 10**9, before + 10**9))
    changed_key = _folder_key(first, tmp_path)
    assert changed_key != key and changed_key["pools"]["train"]["files_sha256"] != key["pools"]["train"]["files_sha256"]
    # An unlabelled folder is keyed by its content too.
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(extra / "x.png")
    with_extra = _folder_key(first, tmp_path, unlabeled=extra)
    pool = next(v for k, v in with_extra["pools"].items() if k.startswith("folder:"))
    Image.fromarray(np.ones((8, 8, 3), dtype=np.uint8)).save(extra / "y.png")
    grown = _folder_key(first, tmp_path, unlabeled=extra)
    assert next(v for k, v in grown["pools"].items() if k.startswith("folder:"))["files_sha256"] != pool["files_sha256"]


def test_topk_away_from_temperature_1_and_unknown_dtypes_are_refused(tmp_path: Path) -> None:
    spec = toy_spec()
    from sskt.config import SourceConfig
    from sskt.engine.checks import check_config

    # The method declares the temperature at which it reads the cache (the cache knows no method).
    cfg = cache_cfg(tmp_path, topk=3, enabled=True)
    cfg.method.name, cfg.sources, cfg.method.sskt.temperature = "sskt", [SourceConfig(name=TINY)], 3.0
    with pytest.raises(UserError, match=r"cache.topk=3 is exact only at method.sskt.temperature 1, got 3.0"):
        check_config(cfg)
    cfg.method.name, cfg.method.sskt.temperature, cfg.method.kd.teacher = "kd", 1.0, TINY
    with pytest.raises(UserError, match=r"cache.topk=3 is exact only at method.kd.temperature 1, got 4.0"):
        check_config(cfg)
    cfg = cache_cfg(tmp_path, dtype="bfloat16")
    with pytest.raises(UserError, match=r"cache.dtype.*'bfloat16'.*float16, float32"):
        opened(cfg, spec, tiny_source(spec))


def test_float32_cache_stores_the_exact_fp32_logits(tmp_path: Path) -> None:
    spec, cfg = toy_spec(), cache_cfg(tmp_path, dtype="float32")
    src, stream = tiny_source(spec), TrainStream(spec, cfg)
    idx = stream.labeled_indices
    params, soft = opened(cfg, spec, src).read(idx, torch.zeros(len(idx), dtype=torch.long))
    assert soft[TINY].dtype == torch.float32
    assert torch.equal(soft[TINY], fresh(spec, stream, src, idx, params))


# --- issue 26, items 5 and 17: a cache that cannot be written is one line, never SIGBUS ----------------------------
def test_a_full_disk_while_reserving_the_arrays_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    """The arrays are allocated on disk before any write through the map (a sparse file would die by SIGBUS
    once the disk is full); ENOSPC there (injected) is one line naming cache.dir, and no partial folder stays."""
    import errno

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    with pytest.raises(UserError, match=r"no space left for the soft-label cache in .*cache.*GB free.*cache\.dir"):
        opened(cfg, spec, tiny_source(spec), build=True)
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_cache_arrays_are_allocated_not_sparse(tmp_path: Path) -> None:
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    cache = opened(cfg, spec, tiny_source(spec), build=True)
    for array in cache.paths[0].glob("*.logits.npy"):
        info = array.stat()
        assert info.st_blocks * 512 >= info.st_size - 4096, "a sparse cache array dies by SIGBUS on a full disk"


def test_a_cache_dir_that_is_a_file_or_read_only_is_one_line(tmp_path: Path) -> None:
    spec = toy_spec()
    (tmp_path / "file").write_text("not a folder")
    cfg = cache_cfg(tmp_path)
    cfg.cache.dir = str(tmp_path / "file")
    with pytest.raises(UserError, match=r"cannot write the soft-label cache under cache\.dir .*file"):
        opened(cfg, spec, tiny_source(spec), build=True)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        cfg.cache.dir = str(locked)
        if not os.access(locked, os.W_OK):  # root ignores the mode
            with pytest.raises(UserError, match=r"cannot write the soft-label cache.*Permission denied"):
                opened(cfg, spec, tiny_source(spec), build=True)
    finally:
        locked.chmod(0o700)


def test_a_second_process_needing_the_same_cache_waits_and_opens_what_the_first_built(tmp_path: Path) -> None:
    """Two builds of one key at once (a grid's parallel cells): the second waits for the first's lock, computes
    nothing, and both end with the complete cache (before the lock, the second replaced it by a bare header)."""
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    plan = plan_for(cfg, spec, TrainStream(spec, cfg), {TINY: tiny_source(spec)})
    first_started, release = threading.Event(), threading.Event()
    seen_second: list[int] = []

    def hold(done: int, total: int) -> None:  # the first build pauses after its first chunk, holding the lock
        first_started.set()
        assert release.wait(30)

    first = threading.Thread(target=build_cache, args=(plan,), kwargs={"chunk": 4, "on_chunk": hold,
                                                                        "show_progress": False})  # fmt: skip
    first.start()
    assert first_started.wait(30)
    second = threading.Thread(target=build_cache, args=(plan,),
                              kwargs={"chunk": 4, "on_chunk": lambda d, t: seen_second.append(d),
                                      "show_progress": False})  # fmt: skip
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting on the lock
    release.set()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive() and seen_second == []
    assert (plan.path / "p0.s0.logits.npy").is_file()
    cache = opened(cfg, spec, tiny_source(spec))
    stream = TrainStream(spec, cfg)
    params, soft = cache.read(stream.labeled_indices, torch.zeros(len(stream.labeled_indices), dtype=torch.long))
    assert torch.equal(soft[TINY], fresh(spec, stream, tiny_source(spec), stream.labeled_indices, params).half())


def test_each_network_has_its_own_cache_shared_by_every_run_that_reads_it(tmp_path: Path) -> None:
    """A run reading two networks (kd+sskt: a teacher and a source) opens one cache per network. A later run that
    reads one of them, under another name, computes nothing and sees the same logits; both networks' caches hold
    the same views, so the logits of each are those of one stored image."""
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    stream = TrainStream(spec, cfg)
    net_a, net_b = tiny_source(spec, seed=0), tiny_source(spec, seed=1)
    both = open_cache(cfg, spec, stream, {"source": net_a, "teacher": net_b}, show_progress=False)
    assert len(set(both.paths)) == 2
    computed: list[int] = []
    alone = open_cache(cfg, spec, stream, {"kd_teacher": net_b}, show_progress=False,
                       on_chunk=lambda d, t: computed.append(d))  # fmt: skip
    assert computed == [] and alone.paths == both.paths[1:]
    idx = stream.labeled_indices
    views = torch.arange(len(idx)) % cfg.cache.views
    params, soft = both.read(idx, views)
    source_alone = open_cache(cfg, spec, stream, {"s": net_a}, build=False)
    assert torch.equal(params, source_alone.read(idx, views)[0])  # each folder stores the same views
    assert torch.equal(soft["teacher"], alone.read(idx, views)[1]["kd_teacher"])
    assert torch.equal(soft["source"], fresh(spec, stream, net_a, idx, params).half())
    assert torch.equal(soft["teacher"], fresh(spec, stream, net_b, idx, params).half())


def test_caches_whose_views_differ_are_never_read_together(tmp_path: Path) -> None:
    """Two networks' caches built by code whose view sampling differed (simulated: one cache's stored parameters
    rolled) hold different views; reading them as one would pair one network's logits with another image."""
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    stream = TrainStream(spec, cfg)
    nets = {"source": tiny_source(spec, seed=0), "teacher": tiny_source(spec, seed=1)}
    caches = open_cache(cfg, spec, stream, nets, show_progress=False)
    params = caches.paths[1] / "p0.params.npy"
    header = json.loads((caches.paths[1] / "cache.json").read_text())
    for meta in header["pools"].values():
        meta.pop("params_sha256")  # as a cache built before the header recorded it: computed from the file
    (caches.paths[1] / "cache.json").write_text(json.dumps(header))
    assert open_cache(cfg, spec, stream, nets, build=False).views == cfg.cache.views  # unchanged views: read
    np.save(params, np.roll(np.load(params), 1, axis=0))
    with pytest.raises(UserError, match=r"hold different views; delete the older one"):
        open_cache(cfg, spec, stream, nets, build=False)


def test_a_build_records_its_seconds_over_every_attempt(tmp_path: Path) -> None:
    """The equal-time tables charge a cache's build to each run that reads it: the header keeps the seconds of
    every attempt, a killed one included (each forward here sleeps 0.05 s, so the forwards bound the seconds)."""
    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    src = tiny_source(spec)
    forwards: list[int] = []

    def slow(*_) -> None:
        forwards.append(1)
        time.sleep(0.05)

    src.net.register_forward_hook(slow)
    plan = plan_for(cfg, spec, TrainStream(spec, cfg), {TINY: src})

    def kill(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(plan, chunk=4, on_chunk=kill, show_progress=False)
    partial = plan.path.with_name(plan.path.name + ".partial")
    killed = json.loads((partial / "progress.json").read_text())["seconds"]
    first = len(forwards)
    build_cache(plan, chunk=4, show_progress=False)
    assert killed >= 0.05 * first > 0 and len(forwards) > first
    assert SoftLabelCache(plan.path).build_seconds >= killed + 0.05 * (len(forwards) - first)


def test_prune_frees_only_what_no_run_can_read(tmp_path: Path, capsys) -> None:
    """``sskt cache prune`` removes a cache of an older format and a build killed and never resumed, with their
    locks; it keeps the current caches, a build under way (its lock held), and folders that are not caches."""
    import fcntl

    from sskt.cli import main

    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    root = Path(cfg.cache.dir)
    (current,) = opened(cfg, spec, tiny_source(spec)).paths
    old = root / "toy-00000000000000aa"
    old.mkdir()
    (old / "cache.json").write_text(json.dumps({"key": {"format": 1}, "complete": True}))
    np.save(old / "p0.s0.logits.npy", np.zeros((100, 4, 7), np.float16))
    (root / ".toy-00000000000000aa.lock").touch()
    killed = root / "toy-00000000000000bb.partial"
    killed.mkdir()
    np.save(killed / "p0.params.npy", np.zeros((10, 4, 3), np.int64))
    running = root / "toy-00000000000000cc.partial"
    running.mkdir()
    lock = root / ".toy-00000000000000cc.lock"
    lock.touch()
    (root / "notes-mine").mkdir()
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another build holds it
    try:
        assert main(["cache", "prune", "--dir", str(root), "--dry-run"]) == 0
        assert "would remove 2 cache folder(s)" in capsys.readouterr().out and old.is_dir() and killed.is_dir()
        assert main(["cache", "prune", "--dir", str(root)]) == 0
    finally:
        os.close(fd)
    out = capsys.readouterr().out
    assert "format 1, this sskt reads 2" in out and "an unfinished build" in out and "removed 2 cache folder(s)" in out
    assert not old.exists() and not killed.exists() and not (root / ".toy-00000000000000aa.lock").exists()
    assert current.is_dir() and running.is_dir() and lock.exists() and (root / "notes-mine").is_dir()
    assert main(["cache", "prune", "--dir", str(root), "--stray"]) == 2
    assert "unexpected argument '--stray'" in capsys.readouterr().err

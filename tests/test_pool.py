"""The fixed unlabelled pool: one draw shared by every run seed and label budget, never a labelled image."""

from __future__ import annotations

import pytest
import torch

from sskt.data.subsets import fixed_pool
from sskt.errors import UserError


def test_the_pool_is_the_same_draw_whatever_is_labelled() -> None:
    remaining = torch.arange(100, 1100)
    a = fixed_pool(remaining, torch.tensor([100, 101, 102]), 200)
    b = fixed_pool(remaining, torch.arange(500, 600), 200)
    assert len(set(a.tolist()) ^ set(b.tolist())) <= 3 + 100, "differs only where one of them labelled"
    common = set(a.tolist()) & set(b.tolist())
    assert len(common) >= 200 - 3 - 100 + 0 and len(a) <= 200 and len(b) <= 200
    assert not set(a.tolist()) & {100, 101, 102} and not set(b.tolist()) & set(range(500, 600))
    assert torch.equal(a, torch.sort(a).values)


def test_no_size_keeps_everything_unlabelled_and_a_bad_size_is_one_line() -> None:
    remaining = torch.arange(10)
    assert fixed_pool(remaining, torch.tensor([3]), None).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    with pytest.raises(UserError, match="data.unlabeled_pool=11 is out of range; valid: 1..10"):
        fixed_pool(remaining, torch.tensor([3]), 11)


def test_a_run_draws_its_unlabelled_rows_from_the_fixed_pool(small_fmnist) -> None:
    from sskt.config import DataConfig
    from sskt.data import build_dataset
    from sskt.data.stream import train_split

    data = DataConfig(root=str(small_fmnist), download=False, labels_per_class=5, val_per_class=5)
    data.unlabeled, data.unlabeled_pool = "rest", 100
    spec = build_dataset(data)
    splits = [train_split(spec, data, seed) for seed in (0, 1)]
    for split in splits:
        assert len(split.rest) <= 100 and len(split.rest) >= 100 - len(split.labeled)
        assert not set(split.rest.tolist()) & (set(split.labeled.tolist()) | set(split.val.tolist()))
    assert len(set(splits[0].rest.tolist()) & set(splits[1].rest.tolist())) >= 100 - 2 * 50


def test_a_pool_size_without_the_rest_pool_is_refused(tiny_cfg) -> None:
    from sskt.engine import check_config

    tiny_cfg.data.unlabeled_pool = 50
    with pytest.raises(UserError, match="data.unlabeled_pool subsets data.unlabeled 'rest'; got data.unlabeled=None"):
        check_config(tiny_cfg)

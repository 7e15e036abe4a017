"""3D targets for clips: the paper's Hara-style 3D ResNet18, a 3D ResNet50 for DML's peer, torchvision's r3d_18."""

from __future__ import annotations

import pytest
import torch

from sskt.config import HeadConfig, ModelConfig
from sskt.errors import UserError
from sskt.models import MODELS, build_target
from sskt.models.video_nets import PadShortcut3d


@pytest.mark.parametrize(
    ("name", "channels", "strides", "millions"),
    [
        ("resnet3d_18", [64, 128, 256, 512], [4, 8, 16, 32], (33.0, 33.4)),
        ("r3d_18", [64, 128, 256, 512], [2, 4, 8, 16], (33.1, 33.2)),
        ("resnet3d_50", [256, 512, 1024, 2048], [4, 8, 16, 32], (46.0, 46.5)),
    ],
)
def test_3d_backbones_declare_their_stages(name, channels, strides, millions) -> None:
    backbone = MODELS.create(name, pretrained=False)
    assert [s.channels for s in backbone.feature_info] == channels
    assert [s.reduction for s in backbone.feature_info] == strides
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    assert millions[0] <= params <= millions[1], params
    outs = backbone.eval().forward_stages(torch.randn(1, 3, 16, 32, 32))
    assert [o.shape[1] for o in outs] == channels and all(o.dim() == 5 for o in outs)


def test_the_papers_3d_resnet18_has_parameter_free_shortcuts_and_a_max_pooled_stem() -> None:
    backbone = MODELS.create("resnet3d_18", pretrained=False)
    shortcuts = [m for m in backbone.modules() if isinstance(m, PadShortcut3d)]
    assert len(shortcuts) == 3 and all(not list(s.parameters()) for s in shortcuts)
    stem = backbone.stages[0][0]
    assert tuple(stem[0].kernel_size) == (7, 7, 7) and isinstance(stem[3], torch.nn.MaxPool3d)


def test_a_3d_target_with_a_linear_auxiliary_head_fits_a_tiny_clip_batch() -> None:
    """Logits and auxiliary logits for clips; ten SGD steps on one batch bring its loss well down."""
    torch.manual_seed(0)
    net = build_target(ModelConfig(name="resnet3d_18"), 4, {"src": 7}, HeadConfig(kind="linear"))
    clips, labels = torch.randn(4, 3, 16, 32, 32), torch.tensor([0, 1, 2, 3])
    out = net(clips)
    assert out.logits.shape == (4, 4) and out.aux_logits["src"].shape == (4, 7)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(net(clips).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_3d_transfer_module_reads_every_stage_of_a_clip() -> None:
    """Its branches are 3D (Conv3d, pooled over time and space) and every parameter gets a gradient."""
    net = build_target(ModelConfig(name="resnet3d_18"), 4, {"src": 7}, HeadConfig(kind="tm", width=16))
    head = net.aux[net.aux_keys["src"]]
    assert len(head.branches) == 4 and isinstance(head.branches[0][0], torch.nn.Conv3d)
    out = net(torch.randn(2, 3, 16, 32, 32))
    assert out.aux_logits["src"].shape == (2, 7)
    out.aux_logits["src"].sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_3d_targets_refuse_what_they_cannot_do() -> None:
    with pytest.raises(UserError, match="no pretrained weights"):
        MODELS.create("resnet3d_18", pretrained=True)
    with pytest.raises(ValueError, match=r"clips \[B, 3, T, H, W\]"):
        MODELS.create("resnet3d_18", pretrained=False).forward_stages(torch.randn(1, 3, 32, 32))

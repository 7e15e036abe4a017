"""The adapted teacher: a linear probe on a frozen source, served as a KD teacher (through the soft-label cache),
and KD on labelled and unlabelled rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import learned
from lightning_fabric import Fabric
from safetensors.torch import load_file

from sskt.config import SourceConfig
from sskt.data import build_dataset
from sskt.data.spec import Batch
from sskt.engine import evaluate, train
from sskt.errors import UserError
from sskt.methods import METHODS, MethodContext
from sskt.methods.kd import TEACHER_KEY
from sskt.sources import SOURCES, SourceBank
from sskt.sources.cache.key import cache_root
from sskt.trained import load_trained, read_weights

LITE0 = SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)


@pytest.fixture(scope="module")
def probe_run(colour_cfg, tmp_path_factory) -> dict:
    """A linear probe on EfficientNet-Lite0's features, fitted on 8 labelled colour images per class."""
    out = tmp_path_factory.mktemp("probe") / "probe"
    cfg = colour_cfg(out, "probe")
    cfg.sources = [LITE0]
    cfg.data.labels_per_class = 8
    cfg.data.batch_size = 8
    cfg.optim.lr, cfg.epochs = 0.01, 6
    return {"cfg": cfg, "summary": train(cfg), "out": out}


def test_the_probe_learns_and_trains_only_its_classifier(probe_run) -> None:
    assert learned("probe final test_acc", probe_run["summary"]["final"]["test_acc"], 75)
    spec = build_dataset(probe_run["cfg"].data)
    fresh = METHODS.create("probe", ctx=MethodContext(probe_run["cfg"], spec, 4)).networks["target"].raw
    assert [n for n, p in fresh.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    trained = load_file(probe_run["out"] / "model.safetensors")
    frozen = [k for k in trained if not k.startswith("fc.")]
    assert len(frozen) > 100, "the source's weights are saved with the classifier"
    assert all(torch.equal(trained[k], fresh.state_dict()[k]) for k in frozen), "the source did not move"
    assert not torch.equal(trained["fc.weight"], fresh.state_dict()["fc.weight"])


def test_a_probe_run_is_a_teacher_with_the_runs_predictions(probe_run) -> None:
    """``checkpoint:<probe run>`` rebuilds the source with the trained classifier: its logits are the run's own."""
    cfg = probe_run["cfg"]
    spec = build_dataset(cfg.data)
    teacher = SOURCES.create(f"checkpoint:{probe_run['out']}")
    assert teacher.num_classes == 4
    method = METHODS.create("probe", ctx=MethodContext(cfg, spec, 4))
    state, _ = read_weights(probe_run["out"] / "model.safetensors")
    method.networks["target"].raw.load_state_dict(state)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(teacher.net(x).logits, method.networks["target"].raw(x).logits, atol=1e-5)


def test_evaluate_rebuilds_a_probe_run(probe_run) -> None:
    assert evaluate(probe_run["out"])["test_acc"] == pytest.approx(probe_run["summary"]["final"]["test_acc"])


def _kd_cfg(colour_cfg, probe_run, out, cache: bool):
    cfg = colour_cfg(out, "kd")
    cfg.method.kd.teacher = f"checkpoint:{probe_run['out']}"
    cfg.data.labels_per_class, cfg.data.batch_size = 8, 8
    cfg.data.unlabeled, cfg.data.unlabeled_ratio = "rest", 1
    cfg.cache.enabled, cfg.cache.views = cache, 2
    cfg.epochs, cfg.method.kd.lam = 5, 0.5  # the labels and the teacher weigh alike: a 3-epoch probe is no oracle
    cfg.method.kd.label_weight = None  # Hinton's (1 - lam) CE: 0.5 CE + 0.5 KD
    return cfg


def test_kd_distils_on_every_row_and_labels_only_the_labelled(colour_cfg, probe_run, tmp_path) -> None:
    """4 labelled and 4 unlabelled rows: the KD term averages over all 8, the label loss over the first 4; only the
    KD term sends gradient to the unlabelled images."""
    cfg = _kd_cfg(colour_cfg, probe_run, tmp_path / "kd", cache=False)
    method = METHODS.create("kd", ctx=MethodContext(cfg, build_dataset(cfg.data), 4))
    method.setup(Fabric(accelerator="cpu", devices=1))
    method.net.eval()  # every row's output depends on that row alone
    images = torch.randn(8, 3, 16, 16, requires_grad=True)
    soft = {TEACHER_KEY: torch.randn(8, 4)}
    batch = Batch(images=images, labels=torch.tensor([0, 1, 2, 3]), indices=torch.arange(8), num_labeled=4, soft=soft)
    out = method.compute_loss(batch)
    loss, logs = out.loss, out.logs
    z = method.net(images).logits
    T, lam = cfg.method.kd.temperature, cfg.method.kd.lam
    kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(soft[TEACHER_KEY] / T, 1), reduction="batchmean") * T * T
    ce = F.cross_entropy(z[:4], batch.labels)
    assert logs["kd_loss"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert loss.item() == pytest.approx(((1 - lam) * ce + lam * kl).item(), rel=1e-5)
    (grad_ce,) = torch.autograd.grad(ce, images, retain_graph=True)
    (grad_kd,) = torch.autograd.grad(kl, images)
    assert grad_ce[4:].abs().max() == 0 and grad_kd[4:].abs().sum() > 0


def test_kd_from_a_probe_teacher_through_the_cache(colour_cfg, probe_run, tmp_path, monkeypatch) -> None:
    """The teacher's logits are cached once and replayed: the KD run trains without running the teacher."""
    monkeypatch.setenv("SSKT_CACHE", str(tmp_path / "cache"))
    cfg = _kd_cfg(colour_cfg, probe_run, tmp_path / "kd", cache=True)
    summary = train(cfg)
    assert learned("kd from probe (cached) final test_acc", summary["final"]["test_acc"], 75)
    (folder,) = cache_root(cfg.cache).glob("imagefolder-*")
    assert TEACHER_KEY in (folder / "cache.json").read_text()
    # A second seed-equal run replays the cache: no source or teacher forward at all.
    monkeypatch.setattr(SourceBank, "forward", lambda self, x: pytest.fail("the teacher ran despite its cache"))
    again = train(_kd_cfg(colour_cfg, probe_run, tmp_path / "kd2", cache=True))
    assert again["final"] == summary["final"]


def test_probe_needs_exactly_one_source(colour_cfg, tmp_path) -> None:
    cfg = colour_cfg(tmp_path / "p", "probe")
    with pytest.raises(UserError, match="method 'probe' needs exactly one source.*got 0"):
        METHODS.get("probe").check(cfg)


def test_a_probe_run_ships_and_predicts(probe_run) -> None:
    from sskt.inference import sample_batch

    net, card = load_trained(probe_run["out"])
    assert card.architecture == "probe" and card.source["name"] == LITE0.name
    teacher = SOURCES.create(f"checkpoint:{probe_run['out']}")
    x = sample_batch(card)
    with torch.inference_mode():
        assert torch.allclose(net(x), teacher.net(x).logits, atol=1e-5)

"""Transferability scores (METHOD.md section 12) against values computed by hand on toy sets, against an independent
brute-force maximisation (LogME), and their invariances."""

from __future__ import annotations

import math

import pytest
import torch

from sskt.sources.scores import h_score, leep, logme, nce

F_1D = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
Y_1D = torch.tensor([0, 0, 1, 1])


def test_logme_of_one_feature_matches_the_closed_form_maximum() -> None:
    # y_c ~ N(0, beta^-1 I + alpha^-1 f f^T). In the basis (f/||f||, its orthogonal complement) the covariance is
    # diag(v, 1/beta, 1/beta, 1/beta) with v = 1/beta + ||f||^2/alpha, and y_c has coordinates x = f.y_c/||f|| and
    # a remainder of squared norm ||y_c||^2 - x^2. The log evidence
    #     -N/2 log 2pi - 1/2 log v - x^2/(2v) - (N-1)/2 log(1/beta) - beta/2 (||y_c||^2 - x^2)
    # is maximal at v = x^2 and 1/beta = (||y_c||^2 - x^2)/(N-1) (valid, as v > 1/beta there).
    # Both classes: f.y_c = +-3, ||f||^2 = 10, so x^2 = 0.9; ||y_c||^2 = 2, N = 4, so 1/beta = 1.1/3 = 0.3667 < 0.9.
    n, x2, rest = 4, 0.9, 1.1
    evidence = -n / 2 * math.log(2 * math.pi) - 0.5 * math.log(x2) - 0.5
    evidence += -(n - 1) / 2 * math.log(rest / (n - 1)) - (n - 1) / 2
    assert logme(F_1D, Y_1D, 2) == pytest.approx(evidence / n, abs=1e-6)


def _max_log_evidence(f: torch.Tensor, yc: torch.Tensor) -> float:
    """Maximise the Gaussian marginal likelihood log N(y_c; 0, beta^-1 I + alpha^-1 f f^T) over (log alpha,
    log beta) directly by L-BFGS, without the SVD or the fixed point."""
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    zero, eye, gram = torch.zeros(len(f), dtype=torch.float64), torch.eye(len(f), dtype=torch.float64), f @ f.T

    def nll() -> torch.Tensor:
        cov = eye / params[1].exp() + gram / params[0].exp()
        return -torch.distributions.MultivariateNormal(zero, cov).log_prob(yc)

    opt = torch.optim.LBFGS([params], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    opt.step(closure)
    return -nll().item()


def _brute_force_logme(f: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """The mean over classes of ``_max_log_evidence``, per image."""
    evidences = [_max_log_evidence(f.double(), (y == c).double()) for c in range(num_classes)]
    return sum(evidences) / num_classes / len(f)


@pytest.mark.parametrize(("n", "d"), [(30, 5), (12, 40)])
def test_logme_equals_the_maximised_evidence_found_without_the_fixed_point(n: int, d: int) -> None:
    # (12, 40): fewer images than dimensions, where the D - k zero singular values count in log|A|.
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    f = torch.randn(n, d, generator=gen) + 1.5 * torch.nn.functional.one_hot(y, d).double().float()
    assert logme(f, y, 3) == pytest.approx(_brute_force_logme(f, y, 3), abs=1e-5)


def test_logme_reaches_the_noise_free_limit_when_the_evidence_runs_there() -> None:
    """Fewer images than dimensions, features far from the origin (as Lite0's non-negative penultimate features
    are): the fixed point sends beta to infinity, which left the floats (NaN; -inf on the v3 benchmark's 100
    labelled images). The evidence there tends to the noise-free Gaussian's, max over alpha of
    log N(y_c; 0, f f^T / alpha), which a direct maximisation also finds."""
    gen = torch.Generator().manual_seed(0)
    n, d, classes = 40, 400, 5
    y = torch.arange(n) % classes
    f = (torch.randn(classes, d, generator=gen)[y] + torch.randn(n, d, generator=gen)).abs()
    gram = f.double() @ f.double().T
    logdet = torch.linalg.slogdet(gram)[1].item()
    limits = []
    for c in range(classes):
        yc = (y == c).double()
        alpha = n / (yc @ torch.linalg.solve(gram, yc)).item()  # the maximising alpha of the noise-free evidence
        limits.append(-n / 2 * math.log(2 * math.pi) - logdet / 2 + n / 2 * math.log(alpha) - n / 2)
    score = logme(f, y, classes)
    assert math.isfinite(score)
    assert score == pytest.approx(sum(limits) / classes / n, abs=1e-6)
    assert score == pytest.approx(_brute_force_logme(f, y, classes), abs=1e-6)


def test_logme_is_invariant_to_rotating_the_features_and_renaming_the_classes() -> None:
    gen = torch.Generator().manual_seed(1)
    f, y = torch.randn(40, 6, generator=gen), torch.randint(0, 4, (40,), generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    base = logme(f, y, 4)
    assert logme(f @ rotation, y, 4) == pytest.approx(base, abs=1e-9)
    assert logme(f, torch.tensor([2, 0, 3, 1])[y], 4) == pytest.approx(base, abs=1e-9)


def test_logme_prefers_features_that_carry_the_labels() -> None:
    gen = torch.Generator().manual_seed(2)
    y = torch.arange(60) % 3
    noise = torch.randn(60, 8, generator=gen)
    informative = noise + 3 * torch.nn.functional.one_hot(y, 8).float()
    assert logme(informative, y, 3) > logme(noise, y, 3)


# softmax(log p) = p: the source's probabilities are exactly these.
THETA = torch.tensor([[0.5, 0.5], [0.8, 0.2], [0.2, 0.8]], dtype=torch.float64)
Y_LEEP = torch.tensor([0, 0, 1])


def test_leep_matches_the_hand_computation() -> None:
    # P(y=0, z) = (0.5 + 0.8, 0.5 + 0.2)/3 = (1.3, 0.7)/3;  P(y=1, z) = (0.2, 0.8)/3;  P(z) = (0.5, 0.5).
    # P(y=0 | z) = (1.3, 0.7)/1.5;  P(y=1 | z) = (0.2, 0.8)/1.5.
    # EEP: image 1 (y=0): (0.5*1.3 + 0.5*0.7)/1.5 = 1/1.5; image 2 (y=0): (0.8*1.3 + 0.2*0.7)/1.5 = 1.18/1.5;
    # image 3 (y=1): (0.2*0.2 + 0.8*0.8)/1.5 = 0.68/1.5.
    expected = (math.log(1 / 1.5) + math.log(1.18 / 1.5) + math.log(0.68 / 1.5)) / 3
    assert leep(THETA.log(), Y_LEEP, 2) == pytest.approx(expected, abs=1e-12)


def test_nce_matches_the_hand_computation() -> None:
    # z = argmax = (0, 0, 0, 1), y = (0, 0, 1, 1): P(0,0) = 1/2, P(1,0) = 1/4, P(1,1) = 1/4; P(z=0) = 3/4, P(z=1) = 1/4.
    # NCE = sum P(y,z) log P(y|z) = 1/2 log(2/3) + 1/4 log(1/3) + 1/4 log 1.
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 1.0], [0.0, 5.0]])
    expected = 0.5 * math.log(2 / 3) + 0.25 * math.log(1 / 3)
    assert nce(logits, Y_1D, 2) == pytest.approx(expected, abs=1e-12)


def test_h_score_matches_the_hand_computation() -> None:
    # f = (-2, -1, 1, 2) has mean 0 and variance 10/4 = 2.5; the class means are -1.5 and 1.5, variance 2.25.
    # In one dimension the shrinkage target is cov(f) itself, so both forms agree.
    assert h_score(F_1D, Y_1D, 2) == pytest.approx(2.25 / 2.5, abs=1e-12)
    assert h_score(F_1D, Y_1D, 2, shrink=False) == pytest.approx(2.25 / 2.5, abs=1e-12)


def test_the_shrunk_h_score_matches_the_hand_computation() -> None:
    # f = (1,0), (-1,0), (0,2), (0,-2): cov = diag(1/2, 2), mu = 5/4, d2 = 2 (3/4)^2 = 9/8; each ||f f^T - cov||^2 is
    # 17/4, so b2 = 17/16 and s = 17/18; the shrunk cov is diag(87/72, 93/72). Labels 0, 1, 0, 1: the class means
    # are +-(1/2, 1), cov(E[f|y]) = [[1/4, 1/2], [1/2, 1]]; H = (1/4) 72/87 + 72/93.
    f = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert h_score(f, torch.tensor([0, 1, 0, 1]), 2) == pytest.approx(18 / 87 + 72 / 93, abs=1e-12)


def test_with_fewer_images_than_dimensions_only_the_shrunk_h_score_tells_features_apart() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    noise = torch.randn(40, 100, generator=gen)
    informative = noise + 3.0 * torch.nn.functional.one_hot(y, 100).float()
    # 40 images in 100 dimensions: the pseudo-inverse form is C - 1 = 3 for pure noise and for informative features
    assert h_score(noise, y, 4, shrink=False) == pytest.approx(3.0, abs=1e-6)
    assert h_score(informative, y, 4, shrink=False) == pytest.approx(3.0, abs=1e-6)
    assert h_score(informative, y, 4) > 1.3 * h_score(noise, y, 4)  # 9.8 against 6.6 here


@pytest.mark.parametrize("score", [leep, nce])
def test_leep_and_nce_are_invariant_to_permuting_the_source_classes(score) -> None:  # noqa: ANN001
    gen = torch.Generator().manual_seed(3)
    logits, y = torch.randn(50, 7, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    permuted = logits[:, torch.randperm(7, generator=gen)]
    assert score(permuted, y, 3) == pytest.approx(score(logits, y, 3), abs=1e-12)


def test_leep_and_nce_reach_zero_for_a_source_that_determines_the_label() -> None:
    y = torch.arange(12) % 3
    logits = 50.0 * torch.nn.functional.one_hot(y * 2, 6).float()  # source class 2c for target class c, confidently
    assert nce(logits, y, 3) == pytest.approx(0.0, abs=1e-12)
    assert leep(logits, y, 3) == pytest.approx(0.0, abs=1e-9)
    assert leep(torch.zeros(12, 6), y, 3) == pytest.approx(math.log(1 / 3), abs=1e-12)  # uninformative: log prior

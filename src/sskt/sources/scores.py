"""Will a source help? Transferability scores computed from one forward of the frozen source (../docs METHOD.md
section 12), before any target is trained.

Notation: ``f`` the source's penultimate features [N, D], ``s`` its logits over its own C_s classes [N, C_s], ``y``
the target labels [N] in ``0..C-1``. Every score is written from its paper's formula and computed in float64.

These scores were validated in their papers against the *fine-tuning* accuracy of the source, not against gains
from distillation or auxiliary tasks into a target trained from scratch; read them as hints until that is measured.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TINY = 1e-300
"""Floor on denominators and probabilities (float64): keeps an empty class or a zero norm finite."""


# --- LogME ---------------------------------------------------------------------------------------------------------
def logme(features: Tensor, labels: Tensor, num_classes: int, max_iter: int = 10_000, tol: float = 1e-10) -> float:
    """LogME (You et al., ICML 2021): the mean over target classes c of the maximised log evidence, divided by N, of
    a Bayesian linear regression of the indicator ``y_c = 1[y = c]`` on ``f``:

        w ~ N(0, alpha^-1 I_D),  y_c | f, w ~ N(f w, beta^-1 I_N)
        log p(y_c | alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2pi
                                   - beta/2 ||f m - y_c||^2 - alpha/2 ||m||^2 - 1/2 log |A|,
        A = alpha I + beta f^T f,  m = beta A^-1 f^T y_c.

    (alpha, beta) maximise it by the paper's fixed point (Algorithm 1), written with the SVD ``f = U S V^T``
    (sigma_i = S_i^2, x = U^T y_c, k = min(N, D) singular values):

        gamma = sum_i beta sigma_i / (alpha + beta sigma_i)
        ||m||^2 = sum_i beta^2 sigma_i x_i^2 / (alpha + beta sigma_i)^2
        ||f m - y_c||^2 = sum_i alpha^2 x_i^2 / (alpha + beta sigma_i)^2 + (||y_c||^2 - ||x||^2)
        alpha <- gamma / ||m||^2,   beta <- (N - gamma) / ||f m - y_c||^2

    until alpha / beta changes by less than ``tol`` (relative). The fixed point can creep: on 12 images of 40
    dimensions it was 0.013 nats per image short of the maximum after 10 steps and 1.5e-4 after 100, and met a direct
    maximisation of the marginal likelihood after about 1000 (each step is a few operations on [k, C]), hence the
    tight ``tol`` and the large ``max_iter``. ``log |A|`` counts the D - k zero singular values
    as ``(D - k) log alpha``: with fewer images than feature dimensions (the few-label case) they are most of A.
    Returns the score in nats per image; higher means the features explain the labels better.
    """
    f = features.double()
    n, d = f.shape
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = s.square()[:, None]  # [k, 1]
    y = torch.nn.functional.one_hot(labels.long(), num_classes).double()  # [N, C]
    x2 = (u.T @ y).square()  # [k, C]
    outside = (y.square().sum(0) - x2.sum(0)).clamp_min(0)  # part of y_c outside f's column space, [C]
    alpha, beta = torch.ones(num_classes, dtype=torch.float64), torch.ones(num_classes, dtype=torch.float64)
    stopped = torch.zeros(num_classes, dtype=torch.bool)
    for _ in range(max_iter):
        alpha_new, beta_new = _logme_step(alpha, beta, sigma, x2, outside, n)
        # With fewer images than dimensions y_c lies in f's column space, and the evidence can rise towards the
        # noise-free limit beta -> inf (finite: y_c ~ N(0, f f^T / alpha)). beta then grows without bound until a
        # step leaves the floats (NaN, or beta 0 once gamma rounds to N). Such a class keeps its last finite iterate,
        # whose evidence is that limit to many digits (seen on 100 Fashion-MNIST images x 1,280 Lite0 features).
        stopped |= ~(alpha_new.isfinite() & beta_new.isfinite() & (alpha_new > 0) & (beta_new > 0))
        alpha_new, beta_new = torch.where(stopped, alpha, alpha_new), torch.where(stopped, beta, beta_new)
        done = (stopped | ((alpha_new / beta_new - alpha / beta).abs() <= tol * (alpha / beta))).all()
        alpha, beta = alpha_new, beta_new
        if done:
            break
    return _log_evidence(alpha, beta, sigma, x2, outside, n, d).mean().item() / n


def _posterior_norms(alpha: Tensor, beta: Tensor, sigma: Tensor, x2: Tensor, outside: Tensor) -> tuple[Tensor, ...]:
    """``(gamma, ||m||^2, ||f m - y||^2)`` per class at (alpha, beta) [C], from the SVD terms."""
    denom = (alpha + beta * sigma).square()
    gamma = (beta * sigma / (alpha + beta * sigma)).sum(0)
    m2 = (beta.square() * sigma * x2 / denom).sum(0)
    res2 = (alpha.square() * x2 / denom).sum(0) + outside
    return gamma, m2, res2


def _logme_step(alpha: Tensor, beta: Tensor, sigma: Tensor, x2: Tensor, outside: Tensor, n: int) -> tuple[Tensor, ...]:
    """One fixed-point update of (alpha, beta) per class."""
    gamma, m2, res2 = _posterior_norms(alpha, beta, sigma, x2, outside)
    return gamma / m2.clamp_min(TINY), (n - gamma) / res2.clamp_min(TINY)


def _log_evidence(
    alpha: Tensor, beta: Tensor, sigma: Tensor, x2: Tensor, outside: Tensor, n: int, d: int
) -> Tensor:  # fmt: skip
    """``log p(y_c | alpha, beta)`` per class [C], with m taken at this (alpha, beta)."""
    _, m2, res2 = _posterior_norms(alpha, beta, sigma, x2, outside)
    log_det = torch.log(alpha + beta * sigma).sum(0) + (d - sigma.shape[0]) * torch.log(alpha)
    return (
        d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2
    )  # fmt: skip


# --- LEEP and NCE --------------------------------------------------------------------------------------------------
def leep(logits: Tensor, labels: Tensor, num_classes: int) -> float:
    """LEEP (Nguyen et al., ICML 2020), with ``theta(x) = softmax(s(x))`` over the source's classes z:

        P(y, z) = 1/N sum_i theta_z(x_i) 1[y_i = y],   P(y | z) = P(y, z) / P(z),   P(z) = sum_y P(y, z)
        LEEP = 1/N sum_i log sum_z P(y_i | z) theta_z(x_i)

    the mean log-likelihood of the "expected empirical predictor" that maps the source's soft prediction to the
    target labels. At most 0; higher is better. Invariant to any permutation of the source's classes.
    """
    theta = torch.softmax(logits.double(), dim=1)  # [N, C_s]
    y = labels.long()
    joint = torch.zeros(num_classes, theta.shape[1], dtype=torch.float64).index_add_(0, y, theta) / len(y)
    conditional = joint / joint.sum(0, keepdim=True).clamp_min(TINY)  # P(y | z), [C, C_s]
    eep = (theta @ conditional.T).gather(1, y[:, None]).squeeze(1)  # [N]
    return eep.clamp_min(TINY).log().mean().item()


def nce(logits: Tensor, labels: Tensor, num_classes: int) -> float:
    """NCE (Tran et al., ICCV 2019), with the source's hard label ``z_i = argmax s(x_i)``:

        P(y, z) = 1/N sum_i 1[y_i = y, z_i = z],   NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) )

    At most 0 (the source's argmax determines the label); higher is better. Invariant to permuting the source's
    classes.
    """
    y, z = labels.long(), logits.argmax(1)
    width = logits.shape[1]
    counts = torch.bincount(y * width + z, minlength=num_classes * width).double().view(num_classes, width)
    joint = counts / len(y)
    p_z = joint.sum(0, keepdim=True).expand_as(joint)
    seen = joint > 0
    return (joint[seen] * (joint[seen] / p_z[seen]).log()).sum().item()


# --- H-score -------------------------------------------------------------------------------------------------------
def h_score(features: Tensor, labels: Tensor, num_classes: int, shrink: bool = True, rcond: float = 1e-10) -> float:
    """H-score (Bao et al., ICIP 2019): ``tr( cov(f)^-1 cov(E[f | y]) )``, both covariances over the N images
    (``E[f | y]`` is each image's class mean of f). Higher is better (at most C - 1 unshrunk).

    With fewer images than dimensions (100 or 1,000 labelled images against EfficientNet-Lite0's 1,280 features)
    ``cov(f)`` is singular, and the pseudo-inverse form (``shrink=False``; eigenvalues below ``rcond`` times the
    largest count as 0) equals C - 1 for every source, whatever its features: the class means always lie in the
    span of the images. ``shrink`` (default) replaces ``cov(f)`` by its Ledoit-Wolf shrinkage towards
    ``tr(S)/D * I`` (Ledoit & Wolf 2004), as the regularised H-score of Ibrahim et al. (2022) does, so the score
    tells sources apart at these sizes (shrinking the large eigenvalues may lift it above C - 1)."""
    f = features.double()
    f = f - f.mean(0)
    y = labels.long()
    sums = torch.zeros(num_classes, f.shape[1], dtype=torch.float64).index_add_(0, y, f)
    means = sums / torch.bincount(y, minlength=num_classes).clamp_min(1)[:, None].double()
    g = means[y]  # E[f | y_i], [N, D]; centred already, since f is
    cov_f, cov_g = f.T @ f / len(f), g.T @ g / len(f)
    if not shrink:
        return torch.trace(torch.linalg.pinv(cov_f, rtol=rcond, hermitian=True) @ cov_g).item()
    return torch.trace(torch.linalg.solve(ledoit_wolf(f, cov_f), cov_g)).item()


def ledoit_wolf(f: Tensor, cov: Tensor) -> Tensor:
    """The Ledoit-Wolf shrinkage of ``cov = f^T f / N`` (``f`` centred, [N, D]) towards ``mu I``, ``mu = tr(cov)/D``:
    ``(1 - s) cov + s mu I`` with ``s = min(b2, d2) / d2``, ``d2 = ||cov - mu I||_F^2`` and
    ``b2 = 1/N^2 sum_k ||f_k f_k^T - cov||_F^2 = (sum_k ||f_k||^4 - N ||cov||_F^2) / N^2``."""
    n, dim = f.shape
    mu = torch.trace(cov) / dim
    eye = torch.eye(dim, dtype=cov.dtype)
    d2 = (cov - mu * eye).square().sum()
    b2 = (f.square().sum(1).square().sum() - n * cov.square().sum()) / n**2
    s = torch.clamp(b2, max=d2) / d2 if d2 > 0 else torch.tensor(1.0, dtype=cov.dtype)
    return (1 - s) * cov + s * mu * eye

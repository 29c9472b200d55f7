"""Training objectives for base networks that are smoothed afterwards.

Each objective maps a batch ``(X, y)`` to a scalar loss for the network
``f`` (logits), with the noise level ``sigma``. :class:`SmoothedClassifier`
picks one with its ``training`` parameter and calls it from skorch's training
step; everything else (epochs, optimizer, callbacks) stays skorch's.

* ``gaussian`` (Cohen et al. 2019): cross-entropy on ``x + N(0, sigma^2 I)``,
  fresh noise per batch.
* ``consistency`` (Jeong & Shin 2020): ``m`` noisy copies per input; the mean
  cross-entropy of the copies plus ``lbd`` times the mean KL divergence from
  the copies' average softmax to each copy's softmax, plus ``eta`` times the
  entropy of that average.
* ``macer`` (Zhai et al. 2020): ``k`` noisy copies; cross-entropy of the
  copies' average softmax, plus ``lbd * sigma / 2`` times the mean hinge
  ``max(0, gamma - (PhiInv(p_y) - PhiInv(p_2)))`` over the inputs the
  average softmax (at inverse temperature ``beta``) classifies correctly,
  where ``p_y`` and ``p_2`` are the true class's and the best other class's
  averaged probabilities. The hinge is left out for the first ``deferred``
  epochs (default 0: from the start).
* ``smoothadv`` (Salman et al. 2019): an L2 PGD attack of ``steps`` steps
  within radius ``epsilon`` against the *soft smoothed* classifier, the
  average softmax over ``m`` noise draws that stay fixed during the attack;
  then cross-entropy on the attacked point plus each of the same draws.
  ``epsilon`` grows linearly over the first ``warmup`` epochs.
* ``smoothmix`` (Jeong et al. 2021): ``steps`` normalized gradient steps of
  size ``step_size`` that increase the soft smoothed classifier's loss
  (``m`` fixed draws), then a point ``x_mix = (1 - lam) x + lam x_adv`` with
  ``lam ~ U(0, 1/2)`` on the segment from ``x`` to the last step, trained
  towards the label ``(1 - lam) F(x) + lam / K`` (``F`` the soft smoothed
  prediction at ``x``, detached), weighted by ``eta``, on top of the
  Gaussian cross-entropy of the copies.

The hyperparameters are the estimator's ``training__*`` keyword values.
Defaults (consistency: m=2, lbd=10, eta=0.5; MACER: k=16, beta=16, gamma=8,
lbd=12, deferred=0; SmoothAdv: m=2, epsilon=0.5, steps=2; SmoothMix: m=2, steps=4,
step_size=0.5 in units of sigma, eta=5) follow the settings the papers
report for CIFAR-10 as far as they were recalled when this was written; they
were not re-checked against the papers, the papers tune several of them per
sigma, and the numbers of noise copies and attack steps are kept small for CPU
budgets. Tune them with ``GridSearchCV`` (``benchmarks/bench_training.py``
shows consistency with lbd=10 collapsing one seed at sigma 0.5 on digits).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["OBJECTIVES", "check_params", "defaults", "smoothed_loss"]

_DEFAULTS: dict[str, dict[str, float]] = {
    "gaussian": {},
    "consistency": {"m": 2, "lbd": 10.0, "eta": 0.5},
    "macer": {"k": 16, "beta": 16.0, "gamma": 8.0, "lbd": 12.0, "deferred": 0},
    "smoothadv": {"m": 2, "epsilon": 0.5, "steps": 2, "warmup": 10},
    "smoothmix": {"m": 2, "steps": 4, "step_size": 0.5, "eta": 5.0},
}
OBJECTIVES = tuple(_DEFAULTS)


def defaults(objective: str) -> dict[str, float]:
    """The default hyperparameters of ``objective`` (a copy)."""
    return dict(_DEFAULTS[objective])


def _copies(x: torch.Tensor, m: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` noise draws per input, shape (m, *x.shape), and the inputs repeated."""
    noise = sigma * torch.randn((m, *x.shape), device=x.device, dtype=x.dtype)
    return noise, x.unsqueeze(0).expand_as(noise)


def _logits(f: Any, z: torch.Tensor) -> torch.Tensor:
    """f on a stack (m, n, ...) of inputs, returned as (m, n, K)."""
    m, n = z.shape[:2]
    out = f(z.reshape(m * n, *z.shape[2:]))
    return out.reshape(m, n, -1)


def consistency_loss(
    f: Any, x: torch.Tensor, y: torch.Tensor, sigma: float, *, m: int, lbd: float, eta: float
) -> torch.Tensor:
    """Consistency regularization: CE of ``m`` copies + ``lbd`` KL to their mean + ``eta`` H."""
    noise, xs = _copies(x, int(m), sigma)
    z = _logits(f, xs + noise)
    ce = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(int(m)))
    logp = torch.log_softmax(z, dim=-1)
    avg = logp.exp().mean(dim=0)
    log_avg = torch.log(avg.clamp_min(1e-12))
    kl = (avg.unsqueeze(0) * (log_avg.unsqueeze(0) - logp)).sum(-1).mean()
    entropy = -(avg * log_avg).sum(-1).mean()
    return ce + lbd * kl + eta * entropy


def macer_loss(
    f: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    *,
    k: int,
    beta: float,
    gamma: float,
    lbd: float,
    deferred: int = 0,
    epoch: int = 0,
) -> torch.Tensor:
    """MACER: CE of the averaged softmax of ``k`` copies + ``lbd sigma / 2`` times the hinge.

    The hinge is left out while ``epoch < deferred`` (epochs count from 0): a
    network that classifies nothing yet gets cross-entropy only.
    """
    noise, xs = _copies(x, int(k), sigma)
    z = _logits(f, xs + noise)
    avg = torch.softmax(z, dim=-1).mean(dim=0)
    ce = F.nll_loss(torch.log(avg.clamp_min(1e-12)), y)
    if epoch < int(deferred):
        return ce
    return ce + lbd * sigma / 2 * macer_hinge(z, y, beta=beta, gamma=gamma)


def macer_hinge(z: torch.Tensor, y: torch.Tensor, *, beta: float, gamma: float) -> torch.Tensor:
    """Mean over the batch of MACER's hinge, counting correctly classified inputs only.

    ``z``: logits of shape (copies, n, K). Inputs the averaged softmax (at
    inverse temperature ``beta``) gets wrong contribute 0 (their radius is 0
    whatever the margin), as do those already beyond ``gamma``.
    """
    avg = torch.softmax(beta * z, dim=-1).mean(dim=0)
    correct = avg.argmax(dim=1) == y
    p_y = avg.gather(1, y[:, None]).squeeze(1)
    others = avg.scatter(1, y[:, None], -1.0)
    p_2 = others.max(dim=1).values
    eps = 1e-6
    normal = torch.distributions.Normal(0.0, 1.0)
    gap = normal.icdf(p_y.clamp(eps, 1 - eps)) - normal.icdf(p_2.clamp(eps, 1 - eps))
    hinge = torch.relu(gamma - gap) * correct
    return hinge.sum() / max(1, len(y))


def _soft_smoothed_ce(f: Any, x: torch.Tensor, noise: torch.Tensor, y: torch.Tensor) -> Any:
    """Cross-entropy of the soft smoothed classifier (average softmax over fixed draws)."""
    z = _logits(f, x.unsqueeze(0) + noise)
    avg = torch.softmax(z, dim=-1).mean(dim=0)
    return F.nll_loss(torch.log(avg.clamp_min(1e-12)), y)


def _unit(g: torch.Tensor) -> torch.Tensor:
    norm = g.reshape(len(g), -1).norm(dim=1).clamp_min(1e-12)
    return g / norm.reshape(-1, *([1] * (g.ndim - 1)))


def smoothadv_attack(
    f: Any, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, *, epsilon: float, steps: int
) -> torch.Tensor:
    """L2 PGD against the soft smoothed classifier with the draws ``noise`` held fixed."""
    x = x.detach()
    if epsilon <= 0 or steps < 1:
        return x
    step = 2.0 * epsilon / steps
    delta = torch.zeros_like(x)
    for _ in range(int(steps)):
        delta.requires_grad_(True)
        loss = _soft_smoothed_ce(f, x + delta, noise, y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step * _unit(grad)
            norm = delta.reshape(len(x), -1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (epsilon / norm).clamp(max=1.0).reshape(-1, *([1] * (x.ndim - 1)))
    return (x + delta).detach()


def smoothadv_loss(
    f: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    *,
    m: int,
    epsilon: float,
    steps: int,
    warmup: int,
    epoch: int = 0,
) -> torch.Tensor:
    """SmoothAdv: CE under ``m`` draws at the PGD point of the soft smoothed classifier."""
    noise, _ = _copies(x, int(m), sigma)
    eps = float(epsilon) * min(1.0, (epoch + 1) / max(1, int(warmup)))
    was = _training_flag(f)
    _set_training(f, False)  # attack the network as it will be smoothed (no dropout draws)
    x_adv = smoothadv_attack(f, x, y, noise, epsilon=eps, steps=int(steps))
    _set_training(f, was)
    z = _logits(f, x_adv.unsqueeze(0) + noise)
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(int(m)))


def smoothmix_points(
    f: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    lam: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial end point and the mixed points ``(1 - lam) x + lam x_adv``."""
    x0 = x.detach()
    xa = x0.clone()
    for _ in range(int(steps)):
        xa.requires_grad_(True)
        loss = _soft_smoothed_ce(f, xa, noise, y)
        (grad,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            xa = xa + step_size * _unit(grad)
    xa = xa.detach()
    shape = (-1, *([1] * (x.ndim - 1)))
    return xa, (1 - lam.reshape(shape)) * x0 + lam.reshape(shape) * xa


def smoothmix_loss(
    f: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    *,
    m: int,
    steps: int,
    step_size: float,
    eta: float,
) -> torch.Tensor:
    """SmoothMix: Gaussian CE of ``m`` copies + ``eta`` times the mixed points' soft-label CE."""
    noise, xs = _copies(x, int(m), sigma)
    z = _logits(f, xs + noise)
    ce = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(int(m)))
    n_classes = z.shape[-1]
    with torch.no_grad():
        soft = torch.softmax(z, dim=-1).mean(dim=0)
    lam = torch.rand(len(x), device=x.device, dtype=x.dtype) / 2
    was = _training_flag(f)
    _set_training(f, False)
    _, x_mix = smoothmix_points(
        f, x, y, noise, steps=int(steps), step_size=float(step_size) * sigma, lam=lam
    )
    _set_training(f, was)
    target = (1 - lam)[:, None] * soft + lam[:, None] / n_classes
    z_mix = _logits(f, x_mix.unsqueeze(0) + noise)
    avg = torch.softmax(z_mix, dim=-1).mean(dim=0)
    mix = -(target * torch.log(avg.clamp_min(1e-12))).sum(dim=1).mean()
    return ce + eta * mix


def _training_flag(f: Any) -> bool:
    return bool(getattr(f, "training", False))


def _set_training(f: Any, flag: bool) -> None:
    if isinstance(f, torch.nn.Module):
        f.train(flag)


def check_params(objective: Any, params: dict) -> dict:
    """The full hyperparameters of ``objective`` (defaults updated by ``params``), checked."""
    if not isinstance(objective, str) or objective not in _DEFAULTS:
        raise ValueError(f"training must be one of {OBJECTIVES}; got {objective!r}.")
    unknown = set(params) - set(_DEFAULTS[objective])
    if unknown:
        names = ", ".join(f"training__{k}" for k in sorted(_DEFAULTS[objective])) or "none"
        raise ValueError(
            f"training={objective!r} takes the hyperparameters {names}; got "
            f"{', '.join('training__' + k for k in sorted(unknown))}."
        )
    kw = {**_DEFAULTS[objective], **params}
    for key, val in kw.items():
        if key in ("m", "k", "deferred"):  # noise copies: at least one; epochs: any
            low = 0 if key == "deferred" else 1
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"training__{key} must be an integer >= {low}; got {val!r}.")
        elif isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
            raise ValueError(f"training__{key} must be a number >= 0; got {val!r}.")
    return kw


def smoothed_loss(
    objective: str,
    f: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    params: dict | None = None,
    epoch: int = 0,
) -> torch.Tensor:
    """The loss of ``objective`` on one batch (``gaussian`` included, for completeness).

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.training import smoothed_loss
    >>> f = torch.nn.Linear(4, 3)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    >>> losses = [smoothed_loss(o, f, x, y, 0.25) for o in ("gaussian", "consistency", "macer")]
    >>> [bool(loss.detach() >= 0) for loss in losses]
    [True, True, True]
    """
    kw = check_params(objective, params or {})
    if objective == "gaussian":
        return F.cross_entropy(f(x + sigma * torch.randn_like(x)), y)
    if objective == "consistency":
        return consistency_loss(f, x, y, sigma, **kw)
    if objective == "macer":
        return macer_loss(f, x, y, sigma, epoch=epoch, **kw)
    if objective == "smoothadv":
        return smoothadv_loss(f, x, y, sigma, epoch=epoch, **kw)
    return smoothmix_loss(f, x, y, sigma, **kw)

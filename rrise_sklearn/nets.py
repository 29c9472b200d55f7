"""Ready-made torch modules, importable so that pickled estimators load anywhere.

Modules return logits (train them with ``torch.nn.CrossEntropyLoss``, the
default criterion of :class:`~rrise_sklearn.SmoothedClassifier`). They take
flat inputs of shape ``(batch, n_features)`` so the estimators stay 2-D like
every scikit-learn estimator; :class:`SmallCNN` reshapes to an image inside.

``n_features`` and ``n_classes`` are filled in from the data at ``fit`` time
when not given (``module__n_features=...`` overrides).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["JensenShannonLoss", "LinearModel", "MLP", "ProbitTailLoss", "SmallCNN"]


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU activations.

    Parameters
    ----------
    n_features : int
        Input size.
    n_classes : int
        Number of output logits.
    hidden : int, default=256
        Width of each hidden layer.
    n_layers : int, default=2
        Number of hidden layers.
    dropout : float, default=0.0
        Dropout probability after each hidden layer.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.nets import MLP
    >>> MLP(64, 10)(torch.zeros(3, 64)).shape
    torch.Size([3, 10])
    """

    def __init__(
        self,
        n_features: int = 64,
        n_classes: int = 10,
        hidden: int = 256,
        n_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X.reshape(X.shape[0], -1))


class SmallCNN(nn.Module):
    """A small convolutional network for square images (8x8, 28x28, 3x32x32, ...).

    Takes image-shaped inputs ``(batch, channels, side, side)`` or flat inputs
    of ``n_features = channels * side * side`` values (reshaped to
    ``(channels, side, side)``). Fitted on image-shaped data, the estimators
    fill in ``n_features`` and ``channels`` from the input shape.

    Parameters
    ----------
    n_features : int
        Flat input size (64 for 8x8 digits, 784 for 28x28 images).
    n_classes : int
        Number of output logits.
    channels : int, default=1
        Image channels.
    width : int, default=32
        Filters of the first convolution (the second has twice as many).
    hidden : int, default=128
        Width of the dense layer.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.nets import SmallCNN
    >>> SmallCNN(64, 10)(torch.zeros(2, 64)).shape
    torch.Size([2, 10])
    >>> SmallCNN(784, 10)(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    >>> SmallCNN(3 * 32 * 32, 10, channels=3)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        n_features: int = 64,
        n_classes: int = 10,
        channels: int = 1,
        width: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        side = math.isqrt(n_features // channels)
        if side * side * channels != n_features:
            raise ValueError(
                f"SmallCNN needs square images: n_features={n_features} is not "
                f"channels * side**2 for channels={channels}."
            )
        self.shape = (channels, side, side)
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        if side >= 16:  # pool again on larger images to keep the head small
            self.features.append(nn.MaxPool2d(2))
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *self.shape)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(X.reshape(X.shape[0], *self.shape)))


class LinearModel(nn.Module):
    """A linear classifier ``x -> W x + b`` (logits).

    With two classes and fixed weights its smoothed classifier is known exactly:
    ``p_A(x) = Phi(distance(x, hyperplane) / sigma)``; the tests use it as an
    oracle.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.nets import LinearModel
    >>> LinearModel(4, 2)(torch.zeros(5, 4)).shape
    torch.Size([5, 2])
    """

    def __init__(self, n_features: int = 2, n_classes: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.linear(X.reshape(X.shape[0], -1))


class JensenShannonLoss(torch.nn.Module):
    """Jensen-Shannon divergence between ``softmax(logits)`` and target frequencies.

    The loss of the prior offline surrogate (Accelerated Smoothing, Bhardwaj et
    al. 2024), kept as a baseline: ``RRISESurrogate(smoothed,
    criterion=JensenShannonLoss)``.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.nets import JensenShannonLoss
    >>> target = torch.tensor([[0.9, 0.1]])
    >>> float(JensenShannonLoss()(torch.log(target), target)) < 1e-7  # equal: no loss
    True
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        m = 0.5 * (p + target)
        logm = torch.log(m.clamp_min(1e-12))
        kl_p = (p * (logp - logm)).sum(1)
        kl_t = torch.where(
            target > 0,
            target * (torch.log(target.clamp_min(1e-12)) - logm),
            torch.zeros_like(target),
        ).sum(1)
        return (0.5 * (kl_p + kl_t)).mean()


class ProbitTailLoss(torch.nn.Module):
    """Soft-label cross-entropy plus a squared error on the probit scale of the top class.

    Cross-entropy barely sees the errors that set certified radii: a target of
    0.998 predicted as 0.9995 costs 0.0013 nats but is 0.41 probit units, and the
    radius is ``sigma * PhiInv(p)``. For each row this adds ``weight *
    (PhiInv(p_c) - PhiInv(t_c))**2`` for the target's top class ``c``, both sides
    kept within ``+-PhiInv(1 - 0.5 / n_samples)`` (the reach of an ``n_samples``
    frequency; the target clipped to ``[0.5/n, 1 - 0.5/n]``). The prediction's
    probit is computed from ``log(1 - p_c)`` (a logsumexp over the other logits),
    so it keeps its precision near ``p_c = 1``.

    Parameters
    ----------
    n_samples : int or None, default=None
        Monte Carlo samples behind each target frequency; ``None`` is filled in
        by :class:`~rrise_sklearn.RRISESurrogate` from its ``n_targets``.
    weight : float, default=1.0
        Weight of the probit term.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.nets import ProbitTailLoss
    >>> target = torch.tensor([[0.998, 0.002]])
    >>> near = ProbitTailLoss(n_samples=1000)(torch.log(torch.tensor([[0.998, 0.002]])), target)
    >>> far = ProbitTailLoss(n_samples=1000)(torch.log(torch.tensor([[0.9995, 0.0005]])), target)
    >>> bool(far - near > 0.1)  # 0.41 probit units apart: about 0.17 in the loss
    True
    """

    def __init__(self, n_samples: int | None = None, weight: float = 1.0) -> None:
        super().__init__()
        self.n_samples = n_samples
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.n_samples is None:
            raise ValueError(
                "ProbitTailLoss needs n_samples (the Monte Carlo samples behind each target); "
                "RRISESurrogate fills it in from n_targets."
            )
        logp = torch.log_softmax(logits, dim=1)
        ce = -(target * logp).sum(1)
        c = target.argmax(dim=1, keepdim=True)
        others = logits.scatter(1, c, float("-inf"))
        logp_c = logp.gather(1, c).squeeze(1)
        log1m_p = torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)  # log(1 - p_c)
        half = 0.5 / float(self.n_samples)
        cap = float(-torch.special.ndtri(torch.tensor(half, dtype=torch.float64)))
        # PhiInv(p_c) from the side that keeps its precision; both sides stay finite (no NaN
        # gradient through the side torch.where does not pick)
        lo, hi = 1e-30, 1.0 - 1e-6
        z_small = torch.special.ndtri(torch.exp(logp_c).clamp(lo, hi))
        z_large = -torch.special.ndtri(torch.exp(log1m_p).clamp(lo, hi))
        z_hat = torch.where(logp_c < math.log(0.5), z_small, z_large).clamp(-cap, cap)
        t = target.gather(1, c).squeeze(1).clamp(half, 1.0 - half)
        z_t = torch.special.ndtri(t).clamp(-cap, cap)
        return (ce + self.weight * (z_hat - z_t) ** 2).mean()

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

__all__ = ["JensenShannonLoss", "LinearModel", "MLP", "SmallCNN"]


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


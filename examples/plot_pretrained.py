"""
Smoothing a pretrained torch module
===================================

Any trained ``torch.nn.Module`` that maps a batch to logits can be certified
without retraining: pass the instance and its classes, and call
``initialize()`` instead of ``fit``. (A model trained without noise is usually
not robust under noise: train with noise of the same sigma when you can.)
"""

import numpy as np
import torch
from sklearn.datasets import load_digits

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.metrics import certified_accuracy
from rrise_sklearn.nets import MLP

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)

# a plain training loop, with Gaussian noise augmentation
torch.manual_seed(0)
model = MLP(64, 10, hidden=128)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
Xt, yt = torch.as_tensor(X[:1400]), torch.as_tensor(y[:1400])
for _ in range(30):
    for idx in torch.randperm(len(Xt)).split(64):
        loss = torch.nn.functional.cross_entropy(
            model(Xt[idx] + 0.25 * torch.randn_like(Xt[idx])), yt[idx]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

clf = SmoothedClassifier(
    model, classes=np.arange(10), sigma=0.25, n=1_000, random_state=0
).initialize()
prediction, radius = clf.certify(X[1400:])
print(
    "certified accuracy at r = 0, 0.25:",
    certified_accuracy(y[1400:], prediction, radius, [0.0, 0.25]),
)

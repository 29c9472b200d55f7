"""
Quickstart: train, certify, plot
================================

Train a :class:`~rrise_sklearn.SmoothedClassifier` on scikit-learn's bundled
digits, certify the test split with Cohen's CERTIFY and plot certified accuracy
against the radius. ``sigma`` and the radii are in the units of ``X`` (pixel
values scaled to [0, 1] here).
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.metrics import abstain_rate, average_certified_radius, certified_accuracy
from rrise_sklearn.nets import MLP
from rrise_sklearn.plotting import CertifiedAccuracyDisplay
from rrise_sklearn.stats import max_certifiable_radius

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

clf = SmoothedClassifier(
    MLP, sigma=0.25, max_epochs=30, n0=100, n=2_000, alpha=0.001, random_state=0
)
clf.fit(X_train, y_train)

result = clf.certify(X_test)  # prediction, radius, p_lower, counts
prediction, radius = result
radii = [0.0, 0.25, 0.5]
print("certified accuracy at", radii, ":", certified_accuracy(y_test, prediction, radius, radii))
print(
    "ACR:",
    round(average_certified_radius(y_test, prediction, radius), 3),
    "abstain rate:",
    abstain_rate(radius),
)

disp = CertifiedAccuracyDisplay.from_results(
    y_test, {"Monte Carlo, n=2000": result}, ceiling=max_certifiable_radius(2_000, 0.001, 0.25)
)
disp.ax_.set_title("digits, sigma = 0.25")
plt.show()

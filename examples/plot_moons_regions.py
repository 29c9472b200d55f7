"""
Certified regions in 2-D (moons)
================================

On two-dimensional data the certificate can be seen: the hue shows the smoothed
classifier's certified class, the intensity and the contours its certified
radius; white areas are abstentions near the decision boundary.
"""

import matplotlib.pyplot as plt
from sklearn.datasets import make_moons

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.nets import MLP
from rrise_sklearn.plotting import plot_certified_regions

X, y = make_moons(400, noise=0.15, random_state=0)
clf = SmoothedClassifier(
    MLP, sigma=0.25, max_epochs=60, lr=1e-2, module__hidden=64, n=500, random_state=0
).fit(X, y)
ax = plot_certified_regions(clf, X, y, grid_size=50)
plt.show()

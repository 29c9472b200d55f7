"""
Choosing sigma with GridSearchCV
================================

``SmoothedClassifier.score`` is the certified accuracy at ``score_radius``, so a
plain ``GridSearchCV`` over ``sigma`` selects by certified accuracy. The scorers
in :mod:`rrise_sklearn.metrics` select at other radii or by ACR, also together
(dict scoring with ``refit=``).
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.metrics import acr_scorer, certified_accuracy_scorer
from rrise_sklearn.nets import MLP

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)[:900]
y = y[:900]

clf = SmoothedClassifier(MLP, max_epochs=15, n0=50, n=300, alpha=0.001, random_state=0)
grid = GridSearchCV(
    clf,
    {"sigma": [0.12, 0.25, 0.5], "module__hidden": [128]},
    scoring={"acc@0.25": certified_accuracy_scorer(0.25), "acr": acr_scorer()},
    refit="acc@0.25",
    cv=3,
    n_jobs=2,
)
grid.fit(X, y)
for sigma, acc, acr in zip(
    grid.cv_results_["param_sigma"],
    grid.cv_results_["mean_test_acc@0.25"],
    grid.cv_results_["mean_test_acr"],
    strict=True,
):
    print(f"sigma={sigma}: certified accuracy at r=0.25 {acc:.3f}, ACR {acr:.3f}")
print("best:", grid.best_params_)

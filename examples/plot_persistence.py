"""
Persisting a fitted pipeline with joblib
========================================

A scaler in front of the smoothed classifier changes the units of ``sigma`` and
of the radii: they are in *scaled* units. A fitted pipeline round-trips through
``joblib`` and gives identical certificates for the same ``random_state``
(the network class lives in the importable :mod:`rrise_sklearn.nets`, so the
file loads in any process).
"""

import os
import tempfile

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rrise_sklearn import SmoothedClassifier
from rrise_sklearn.nets import SmallCNN

X, y = load_digits(return_X_y=True)
X = X.astype(np.float32)
pipe = make_pipeline(
    StandardScaler(),
    SmoothedClassifier(SmallCNN, sigma=0.5, max_epochs=5, n=500, random_state=0),
)
pipe.fit(X[:1200], y[:1200])

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "smoothed_pipeline.joblib")
    joblib.dump(pipe, path)
    loaded = joblib.load(path)

Z = pipe[0].transform(X[1200:1250])
a = pipe[-1].certify(Z)
b = loaded[-1].certify(loaded[0].transform(X[1200:1250]))
print(
    "identical certificates after the round trip:",
    np.array_equal(a.radius, b.radius) and np.array_equal(a.prediction, b.prediction),
)
print("radii are in standardized units; mean radius", a.radius.mean().round(3))

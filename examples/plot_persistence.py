"""
Saving a fitted pipeline safely
===============================

``rrise_sklearn.save`` writes a model as a JSON manifest, safetensors weights
and numpy arrays: loading it never runs code from the file (a joblib file is a
pickle, and unpickling can run anything). A scaler in front of the smoothed
classifier changes the units of ``sigma`` and of the radii: they are in
*scaled* units. The loaded pipeline gives identical certificates for the same
``random_state``.
"""

import os
import tempfile
import zipfile

import numpy as np
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import rrise_sklearn
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
    path = rrise_sklearn.save(pipe, os.path.join(tmp, "smoothed_pipeline.zip"))
    print("members:", sorted(zipfile.ZipFile(path).namelist()))
    loaded = rrise_sklearn.load(path)

a = rrise_sklearn.certify(pipe, X[1200:1250])
b = rrise_sklearn.certify(loaded, X[1200:1250])
print(
    "identical certificates after the round trip:",
    np.array_equal(a.radius, b.radius) and np.array_equal(a.prediction, b.prediction),
)
print("radii are in standardized units; mean radius", a.radius.mean().round(3))

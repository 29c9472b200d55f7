"""The golden record: recorded model files load to the recorded certificates and calibration.

``tests/golden/record.py --check`` also refits every setting and compares bitwise (the
acceptance check of a refactor); this is the part cheap enough for every run: a model file
written by an earlier version keeps certifying exactly as it did.
"""

import os
import sys

import numpy as np
import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
sys.path.insert(0, HERE)

from record import load_record_model, settings  # noqa: E402

NAMES = [name for name, _ in settings()]


def load_manifest_params(name):
    """The SmoothedClassifier parameters a recorded file states."""
    import json
    import zipfile

    with zipfile.ZipFile(os.path.join(HERE, f"{name}.zip")) as zf:
        spec = json.loads(zf.read("manifest.json"))["final"]
    while spec.get("class") != "SmoothedClassifier":
        spec = spec["smoothed"]
    return spec["params"]


@pytest.mark.parametrize("name", NAMES)
def test_recorded_model_file_loads_to_the_recorded_certificates(name):
    want = dict(np.load(os.path.join(HERE, f"{name}.npz")))
    with pytest.warns(UserWarning, match="model file of format 1"):  # before 0.2: no digest
        sur = load_record_model(name, quiet=False)
    # the calibration is stored, not recomputed: bitwise
    np.testing.assert_array_equal(np.atleast_1d(sur.threshold_), want["threshold"])
    np.testing.assert_array_equal(sur.calibration_scores_, want["calibration_scores"])
    np.testing.assert_array_equal(sur.refine_levels_, want["refine_levels"])
    assert sur.prediction_cap_ == want["prediction_cap"][0]
    assert sur.calibration_.floor_bound is False  # scored as then: verify/monitor agree
    # written before n_predict existed: predict draws the n samples it drew then, not 1,000
    assert "n_predict" not in load_manifest_params(name) and sur.smoothed_.n_predict is None
    res = sur.certify(want["X_test"])
    np.testing.assert_array_equal(res.prediction, want["prediction"])
    # the forward pass is float32: another CPU may round its products differently
    np.testing.assert_allclose(res.radius, want["radius"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.p_lower, want["p_lower"], rtol=1e-5, atol=1e-7)
    assert (res.radius > 0).sum() > len(res.radius) / 4  # the record is not all abstentions

"""
RRISE: certification in one forward pass, and when it pays off
==============================================================

:class:`~rrise_sklearn.RRISESurrogate` computes Monte Carlo targets, trains a
surrogate, and calibrates it once on held-out data. Each certificate then costs
one forward pass. ``amortization_`` reports the measured one-time cost and the
number of queries after which it pays for itself.

By default the surrogate trains on the base network's own training inputs (the
smoothed classifier keeps them and labels them with Monte Carlo counts, no
labels needed), as an ensemble of five, and every held-out input calibrates it:
the configuration that measured best on digits (``benchmarks/README.md``). This
example lowers the sample sizes so that it runs in seconds; the defaults'
figures are in ``benchmarks/bench_rrise_defaults.py``.

Guarantee: for an input exchangeable with the calibration set,
``P(radius > 0 and the certificate is wrong) <= alpha_conf + alpha_mc``.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from rrise_sklearn import RRISESurrogate, SmoothedClassifier
from rrise_sklearn.metrics import certified_accuracy
from rrise_sklearn.nets import MLP

X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_base, X_rest, y_base, y_rest = train_test_split(X, y, train_size=0.45, random_state=0)
X_sur, X_test, _, y_test = train_test_split(X_rest, y_rest, test_size=0.35, random_state=0)

clf = SmoothedClassifier(MLP, sigma=0.25, max_epochs=30, n=2_000, random_state=0)
clf.fit(X_base, y_base)
sur = RRISESurrogate(
    clf,
    n_targets=500,
    n_augment=4,
    n_calibration=2_000,
    n_refine=20_000,
    alpha_conf=0.05,
    n_members=3,
    max_epochs=10,
    random_state=0,
).fit(X_sur)  # trains on clf.training_inputs_ (X_base); all of X_sur calibrates

mc, rr = clf.certify(X_test), sur.certify(X_test)
for name, res in [("Monte Carlo", mc), ("RRISE", rr)]:
    print(
        f"{name:12s} certified accuracy at r = 0, 0.25, 0.5:",
        np.round(certified_accuracy(y_test, *res, r=[0, 0.25, 0.5]), 3),
    )
a = sur.amortization_
print(
    f"per query: MC {1e3 * a['mc_per_query']:.2f} ms, RRISE {1e6 * a['surrogate_per_query']:.1f} us"
    f" ({a['speedup']:.0f}x); break-even after {a['break_even_queries']:.0f} queries"
)

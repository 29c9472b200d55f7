"""The ``rrise`` command: ``rrise demo`` and ``rrise certify``.

Run ``rrise --help`` or ``python -m rrise_sklearn --help``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]


class CLIError(Exception):
    """An error reported to the user in one line (no traceback)."""


def _write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a one-line error if the folder is missing)."""
    from ._io import write_atomic

    try:
        write_atomic(path, lambda fh: fh.write(text), text=True)
    except FileNotFoundError as exc:
        raise CLIError(f"output {exc}") from None


# ---------------------------------------------------------------------------
# rrise certify
# ---------------------------------------------------------------------------
def _load_array(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise CLIError(f"{what} file {path} not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CLIError(f"{what} file {path} is not a numeric .npy array ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise CLIError(f"cannot read {what} file {path}: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise CLIError(f"{what} file {path} holds several arrays; save one array with np.save")
    return arr


def _certifier(model: Any) -> tuple[Any, Any]:
    """(preprocessing or None, certifier) from an estimator or a Pipeline."""
    from .pipeline import split_certifier

    try:
        return split_certifier(model)
    except TypeError as exc:
        raise CLIError(str(exc)) from None


def _import_class(dotted: str) -> Any:
    """A class named on the command line (the user's say-so, never the model file's)."""
    import importlib

    mod_name, _, attr = dotted.replace(":", ".").rpartition(".")
    if not mod_name:
        raise CLIError(f"--module needs a dotted name such as mypackage.nets.MyNet; got {dotted}")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"cannot import --module {dotted}: {exc}") from None


def _load_model(args: argparse.Namespace) -> Any:
    from .persistence import ModelFileError, is_model_file, load

    path = args.model
    if not os.path.exists(path):
        raise CLIError(f"model file {path} not found")
    module = [_import_class(m) for m in args.module] if args.module else None
    key = None
    if getattr(args, "key_env", None):
        key = os.environ.get(args.key_env)
        if not key:
            raise CLIError(f"--key-env {args.key_env}: that environment variable is not set")
    if is_model_file(path) or path.endswith(".zip") or os.path.isdir(path):
        try:
            return load(path, module=module, device=args.device, key=key)
        except (ModelFileError, TypeError, ValueError) as exc:
            raise CLIError(f"cannot load model {path}: {exc}") from None
    if not args.allow_pickle:
        raise CLIError(
            f"{path} is not an rrise model file (a directory or .zip written by "
            "rrise_sklearn.save). If it is a joblib/pickle file: loading one can run any code "
            "its author put in it. Re-save the model with rrise_sklearn.save(model, path), or "
            "pass --allow-pickle if you trust where the file came from."
        )
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from None


def _check_output(path: str) -> tuple[str, str]:
    """Refuse an unwritable output path before any work (a typo must not cost a run)."""
    out = os.path.abspath(path)
    folder = os.path.dirname(out)
    if os.path.isdir(out):
        raise CLIError(f"--out {path} is a directory; give a file name, e.g. {path}/results.tsv")
    if not os.path.isdir(folder):
        raise CLIError(f"--out {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"--out {path}: folder {folder} is not writable")
    meta = out + ".json"
    if os.path.isdir(meta):
        raise CLIError(f"the metadata file {meta} would replace a directory")
    return out, meta


def _chunk_seed(cert: Any, chunk: int) -> Any:
    """Seed of a chunk: the estimator's own for the first (one chunk = one ``certify`` call), a
    distinct derived one for the next (fresh noise per chunk)."""
    if chunk == 0 or not hasattr(cert, "n0"):
        return None
    from .sampling import resolve_seed

    root = resolve_seed(cert.random_state)
    return int(np.random.SeedSequence([root, chunk]).generate_state(1)[0])


def cmd_certify(args: argparse.Namespace) -> int:
    out, meta_path = _check_output(args.out)
    model = _load_model(args)
    _, cert = _certifier(model)
    X = _load_array(args.data, "data")
    if X.dtype.kind not in "iuf":
        raise CLIError(f"data file {args.data} is not numeric (dtype {X.dtype})")
    if X.ndim < 2:
        raise CLIError(
            f"data must have shape (inputs, features) or (inputs, *input_shape); got {X.shape}"
        )
    expected = getattr(model, "input_shape_", None)
    if expected is None and getattr(model, "n_features_in_", None) is not None:
        expected = (model.n_features_in_,)
    if expected is not None and tuple(X.shape[1:]) != tuple(expected):
        raise CLIError(
            f"data has inputs of shape {tuple(X.shape[1:])}; the model expects {tuple(expected)}"
        )
    if not np.isfinite(X).all():
        raise CLIError("data contains NaN or infinity")
    y = None
    if args.labels:
        y = _load_array(args.labels, "labels")
        if y.ndim != 1 or len(y) != len(X):
            raise CLIError(f"labels must be 1-D with {len(X)} entries; got shape {y.shape}")
    overrides = {k: getattr(args, k) for k in ("n0", "n", "alpha") if getattr(args, k) is not None}
    if overrides and not hasattr(cert, "n0"):
        raise CLIError("--n0/--n/--alpha apply to a SmoothedClassifier only")
    if overrides:
        cert.set_params(**overrides)
    from .pipeline import certify, raw_input_scale

    if args.radius_space == "input" and raw_input_scale(model) is None:
        raise CLIError(
            "--radius-space input needs a Pipeline of per-feature scalers before the certifier; "
            "this model's radii have no exact conversion"
        )
    partial = out + ".partial"
    t_all = time.perf_counter()
    done = correct = 0
    info: dict[str, Any] = {}
    try:
        with open(partial, "w", encoding="utf-8") as fh:
            fh.write("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
            fh.flush()
            for chunk, lo in enumerate(range(0, len(X), args.chunk_size)):
                Xc = X[lo : lo + args.chunk_size]
                t0 = time.perf_counter()
                seed = _chunk_seed(cert, chunk)
                try:
                    res = certify(model, Xc, **({"random_state": seed} if seed is not None else {}))
                except ValueError as exc:
                    raise CLIError(str(exc)) from None
                per_input = (time.perf_counter() - t0) / len(Xc)
                info = res.info
                radius = res.input_radius if args.radius_space == "input" else res.radius
                rows = []
                for j, (p, r) in enumerate(zip(res.prediction, radius, strict=True)):
                    i = lo + j
                    label = "NA" if y is None else str(y[i])
                    ok = "NA" if y is None else str(int(r > 0 and p == y[i]))
                    correct += ok == "1"
                    rows.append(f"{i}\t{label}\t{p}\t{r:.6g}\t{ok}\t{per_input:.6g}\n")
                fh.write("".join(rows))
                fh.flush()  # an interrupted run keeps every certified chunk in the .partial file
                done += len(Xc)
            os.fsync(fh.fileno())
    except KeyboardInterrupt:
        print(
            f"rrise certify: interrupted after {done} of {len(X)} inputs; their lines are in "
            f"{partial}",
            file=sys.stderr,
        )
        raise
    except BaseException:
        if done == 0 and os.path.exists(partial):
            os.unlink(partial)
        raise
    elapsed = time.perf_counter() - t_all
    units = (
        "L2 in the units of the data file"
        if args.radius_space == "input"
        else info.get("radius_units")
    )
    meta = {
        "rrise_sklearn": _version(),
        "model": os.path.abspath(args.model),
        "data": os.path.abspath(args.data),
        "n_inputs": int(len(X)),
        "sigma": info.get("sigma"),
        "radius_units": units,
        "radius_space": args.radius_space,
        "input_scale": info.get("input_scale"),
        "alpha": info.get("alpha"),
        "alpha_conf": info.get("alpha_conf"),
        "alpha_mc": info.get("alpha_mc"),
        "n0": info.get("n0"),
        "n": info.get("n"),
        "chunk_size": int(args.chunk_size),
        "seconds": round(elapsed, 3),
        "columns": ["idx", "label", "predict", "radius", "correct", "time"],
    }
    import json

    _write_atomic(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(partial, out)
    msg = (
        f"certified {len(X)} inputs in {elapsed:.2f} s -> {args.out} (metadata: "
        f"{os.path.basename(meta_path)}; sigma={info.get('sigma')}; "
        f"radius: {units})"
    )
    if y is not None:
        msg += f" (certified accuracy at r=0: {correct / len(X):.3f})"
    print(msg)
    return 0


def _version() -> str:
    from . import __version__

    return __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


# ---------------------------------------------------------------------------
# rrise demo
# ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(quick=args.quick, sigma=args.sigma, out=args.plot, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrise",
        description=(
            "Certified L2 robustness by randomized smoothing. 'rrise demo' shows the whole "
            "workflow on scikit-learn's bundled digits; 'rrise certify' certifies inputs with "
            "a saved model."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rrise-sklearn {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="train, certify with Monte Carlo and with RRISE on the digits data, print a table",
        description=(
            "Train a smoothed classifier on scikit-learn's bundled 8x8 digits (nothing is "
            "downloaded), certify the test split with Monte Carlo (Cohen's CERTIFY), fit and "
            "calibrate an RRISE surrogate, then print certified accuracy, abstain rate, "
            "average certified radius, per-query time, speedup and break-even queries, and "
            "save the certified-accuracy plot."
        ),
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run with small sample sizes (figures are rough)",
    )
    demo.add_argument(
        "--sigma",
        type=float,
        default=0.25,
        help="noise level, in the units of the pixel values scaled to [0, 1] (default 0.25)",
    )
    demo.add_argument(
        "--plot",
        default="rrise_demo.png",
        help="where to save the certified-accuracy plot (PNG; default rrise_demo.png)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=cmd_demo)

    cert = sub.add_parser(
        "certify",
        help="certify the inputs of a .npy file with a saved model, write a TSV",
        description=(
            "Certify every row of a .npy array with a model saved by rrise_sklearn.save (a "
            "SmoothedClassifier, an RRISESurrogate, or a Pipeline of scalers ending in one; "
            "a directory or a .zip; loading it runs no code from the file). Writes one "
            "tab-separated line per input under one header line: idx, label, predict, radius, "
            "correct, time (the column order of the reference randomized-smoothing tools, "
            "readable as is with pandas.read_csv(path, delimiter='\\t'); time is the chunk's "
            "time divided by its number of inputs). A prediction equal to the abstain label "
            "(-1 by default) with radius 0 means the model abstained. sigma and the radius' "
            "units go to a JSON file beside the TSV."
        ),
    )
    cert.add_argument(
        "--model",
        required=True,
        help="model written by rrise_sklearn.save (directory or .zip)",
    )
    cert.add_argument(
        "--module",
        action="append",
        metavar="DOTTED.CLASS",
        help=(
            "network class the model was trained with when it is not in rrise_sklearn.nets, "
            "e.g. mypackage.nets.MyNet (imported because you name it here; repeatable)"
        ),
    )
    cert.add_argument(
        "--key-env",
        metavar="VAR",
        default=None,
        help=(
            "the environment variable holding the key a signed model file was saved with "
            "(rrise_sklearn.save(..., key=...)); never on the command line, where other users "
            "can read it"
        ),
    )
    cert.add_argument(
        "--allow-pickle",
        action="store_true",
        help=(
            "also accept a joblib/pickle file. UNSAFE: unpickling runs whatever code the "
            "file's author put in it; use only for files you created or fully trust"
        ),
    )
    cert.add_argument("--device", help="override the saved device, e.g. cpu")
    cert.add_argument(
        "--data", required=True, help="inputs, a .npy array of shape (n, features) or (n, C, H, W)"
    )
    cert.add_argument("--labels", help="true labels, a 1-D .npy array (fills label/correct)")
    cert.add_argument(
        "--out",
        required=True,
        help=(
            "output TSV file; checked before anything runs. Lines are flushed to OUT.partial "
            "after each chunk (an interrupted run keeps them) and renamed to OUT at the end; the "
            "metadata (sigma, radius units, levels, versions) goes to OUT.json"
        ),
    )
    cert.add_argument(
        "--radius-space",
        choices=("model", "input"),
        default="model",
        help=(
            "model (default): radii in the certifier's input space (after the Pipeline's "
            "scalers); input: in the units of the data file (exact for per-feature scalers)"
        ),
    )
    cert.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1000,
        help="inputs certified per chunk (default 1000); each chunk draws fresh noise",
    )
    cert.add_argument(
        "--n0", type=_positive_int, help="selection samples (SmoothedClassifier only)"
    )
    cert.add_argument(
        "--n", type=_positive_int, help="estimation samples (SmoothedClassifier only)"
    )
    cert.add_argument("--alpha", type=_level, help="error level (SmoothedClassifier only)")
    cert.set_defaults(func=cmd_certify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rrise`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"rrise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rrise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

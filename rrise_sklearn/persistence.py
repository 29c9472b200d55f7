"""Model files that cannot run code when loaded: JSON manifest, safetensors weights, numpy arrays.

:func:`save` writes a fitted :class:`~rrise_sklearn.SmoothedClassifier`, a
fitted :class:`~rrise_sklearn.RRISESurrogate` (with its smoothed classifier),
or a :class:`~sklearn.pipeline.Pipeline` of allow-listed scalers ending in one
of them, as a directory or (for a path ending in ``.zip``) a zip archive of:

* ``manifest.json``: format version, library and dependency versions, the
  estimator class (from an allow-list), its JSON-able parameters, each
  network's class as a dotted name with its constructor arguments, and the
  SHA-256 of every other member;
* ``*.safetensors``: network weights (the base network; the surrogate network
  or its ensemble members). safetensors holds tensors and string metadata only;
* ``arrays.npz``: fitted numpy state (classes, calibration scores, thresholds,
  scaler statistics), read with ``allow_pickle=False``.

:func:`load` reads it back without unpickling anything and without importing
anything the file names: network classes come from :mod:`rrise_sklearn.nets`
or from the classes the caller passes (``load(path, module=MyNet)``); loss and
optimizer classes only from :mod:`torch.nn` and :mod:`torch.optim`. A file of a
newer format, a checksum mismatch, a truncated archive, an unexpected member,
or a member that is not what its name says (a pickle dropped in, say) is
refused with :class:`ModelFileError` and nothing is executed.

What is not saved: the optimizer's state (a loaded estimator certifies and
predicts as before; training it further starts a fresh optimizer), callbacks
and other parameters that are not JSON-able (named in a warning at save time),
and, unless ``include_training_data=True``, the smoothed classifier's
training inputs and the surrogate's training inputs and counts.

Examples
--------
>>> import tempfile, os
>>> import numpy as np
>>> from rrise_sklearn import SmoothedClassifier, load, save
>>> from rrise_sklearn.nets import MLP
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(60, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
>>> clf = SmoothedClassifier(MLP, max_epochs=2, n=200, random_state=0).fit(X, y)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = save(clf, os.path.join(tmp, "model.zip"))
...     back = load(path)
>>> bool(np.array_equal(back.certify(X[:5]).radius, clf.certify(X[:5]).radius))
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import inspect
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from typing import Any

import numpy as np
import torch

from ._io import write_atomic
from ._validation import refine_stages
from .conformal import ConformalCalibration
from .ensemble import MeanLogProbEnsemble, state_digest
from .nets import JensenShannonLoss, ProbitTailLoss
from .smoothing import SmoothedClassifier, build_module, module_kwargs
from .surrogate import RRISESurrogate

__all__ = [
    "FORMAT_VERSION",
    "MAX_COMPRESSION_RATIO",
    "MAX_ENSEMBLE_MEMBERS",
    "MAX_MEMBER_BYTES",
    "ModelFileError",
    "is_model_file",
    "load",
    "save",
]

FORMAT = "rrise-sklearn-model"
FORMAT_VERSION = 2  # 2: a digest over the manifest, the calibration as one section
_MANIFEST = "manifest.json"
_ARRAYS = "arrays.npz"
_MEMBER_NAME = re.compile(r"^[a-z0-9_]+\.(safetensors|npz)$")
_MAX_MANIFEST_BYTES = 16 * 2**20
#: the largest member a model file may hold, and the largest compression ratio of a zip member
#: (save writes members uncompressed): a small file never unpacks into gigabytes
MAX_MEMBER_BYTES = 8 * 2**30
MAX_COMPRESSION_RATIO = 20
#: the most networks an ensemble in a model file may hold
MAX_ENSEMBLE_MEMBERS = 1024

# preprocessing steps a saved Pipeline may hold: their fitted state is numeric arrays only
_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer")
_ESTIMATORS = ("SmoothedClassifier", "RRISESurrogate", "Pipeline")


class ModelFileError(ValueError):
    """A model file is missing, damaged, tampered with, or of an unknown format."""


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return math.isfinite(float(value))
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, tuples to lists (JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for dist in ("rrise-sklearn", "torch", "numpy", "scikit-learn", "skorch", "safetensors"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:  # pragma: no cover - running from a source tree
            out[dist] = None
    return out


def _text_array(a: np.ndarray) -> np.ndarray:
    """Object arrays of strings become fixed-width unicode (no pickle needed)."""
    if a.dtype.kind == "O":
        if not all(isinstance(v, str) for v in a.ravel()):
            raise TypeError("only numeric or string arrays can be saved")
        return a.astype(str)
    return a


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------
def _network_spec(module_param: Any, kwargs: dict) -> dict:
    """How to rebuild a network: its class as a dotted name and constructor arguments."""
    if module_param is None:
        return {"class": None}
    given_as = "class" if inspect.isclass(module_param) else "instance"
    cls = module_param if given_as == "class" else type(module_param)
    bad = sorted(k for k, v in kwargs.items() if not _jsonable(v))
    if bad:
        raise TypeError(
            f"cannot save module arguments {bad}: only JSON values (numbers, strings, lists) "
            "can be stored in a model file."
        )
    return {"class": _dotted(cls), "given_as": given_as, "kwargs": _plain(kwargs)}


def _resolve_module(spec: dict, module: Any) -> Any:
    """The class (or instance) to rebuild a network with, never imported from the file."""
    name = spec.get("class")
    if not isinstance(name, str):
        raise ModelFileError("the manifest names no network class")
    given: list = []
    if module is not None:
        given = list(module) if isinstance(module, (list, tuple)) else [module]
    for cand in given:  # exact dotted name, then class name
        cls = cand if inspect.isclass(cand) else type(cand)
        if _dotted(cls) == name:
            return cand
    for cand in given:
        cls = cand if inspect.isclass(cand) else type(cand)
        if cls.__qualname__ == name.rsplit(".", 1)[-1]:
            return cand
    if len(given) == 1:
        return given[0]
    prefix = "rrise_sklearn.nets."
    if name.startswith(prefix) and "." not in name[len(prefix) :]:
        from . import nets

        cls = getattr(nets, name[len(prefix) :], None)
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module):
            if spec.get("given_as") == "instance" and module is None:
                raise ModelFileError(
                    f"the network was given as an instance of {name} whose constructor "
                    f"arguments are unknown; pass load(path, module={cls.__name__}(...)) with "
                    "the same arguments"
                )
            return cls
    raise ModelFileError(
        f"the file names the network class {name!r}, which is not in rrise_sklearn.nets; "
        f"pass the class itself: load(path, module={name.rsplit('.', 1)[-1]}) (a model "
        "file never makes rrise-sklearn import code)"
    )


def _resolve_torch(name: Any, kind: str) -> Any:
    """A loss class (torch.nn's or rrise_sklearn.nets') or a torch.optim optimizer, by name."""
    if kind == "criterion" and isinstance(name, str) and name in _NET_LOSSES:
        return _NET_LOSSES[name]
    base, namespace = (
        (torch.nn.modules.loss._Loss, torch.nn)
        if kind == "criterion"
        else (torch.optim.Optimizer, torch.optim)
    )
    prefix = f"{namespace.__name__}."
    what = "a loss class" if kind == "criterion" else "an optimizer class"
    cls = None
    if isinstance(name, str) and name.startswith(prefix):
        cls = getattr(namespace, name[len(prefix) :], None)
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ModelFileError(f"{kind} {name!r} is not {what} of {namespace.__name__}")
    return cls


def _torch_name(cls: Any, kind: str) -> str | None:
    if kind == "criterion":
        for name, known in _NET_LOSSES.items():
            if cls is known:
                return name
    namespace = torch.nn if kind == "criterion" else torch.optim
    if inspect.isclass(cls) and getattr(namespace, cls.__name__, None) is cls:
        return f"{namespace.__name__}.{cls.__name__}"
    return None


#: the losses of rrise_sklearn.nets a model file may name as its criterion
_NET_LOSSES = {
    "rrise_sklearn.nets.JensenShannonLoss": JensenShannonLoss,
    "rrise_sklearn.nets.ProbitTailLoss": ProbitTailLoss,
}

# ---------------------------------------------------------------------------
# estimator parameters
# ---------------------------------------------------------------------------
_SPECIAL = {"module", "criterion", "optimizer", "smoothed"}


def _params(est: Any, dropped: list) -> dict:
    """JSON-able constructor parameters; others that differ from the defaults are dropped."""
    params = est.get_params(deep=False)
    defaults = {}
    try:
        sig = inspect.signature(type(est).__init__).parameters
        defaults = {k: p.default for k, p in sig.items() if p.default is not inspect._empty}
    except (TypeError, ValueError):  # pragma: no cover
        pass
    skorch_defaults = _skorch_defaults()
    out: dict[str, Any] = {}
    for key, val in params.items():
        if key in _SPECIAL or key.startswith(("module__", "_")):
            continue
        if isinstance(val, torch.device):
            val = str(val)
        if isinstance(val, np.ndarray) and val.dtype.kind in "biufU":
            val = val.tolist()
        if _jsonable(val):
            out[key] = _plain(val)
        elif key in ("random_state",):
            dropped.append(key)
        elif key in defaults and (val is defaults[key] or _same_default(val, defaults[key])):
            continue
        elif key in skorch_defaults and val is skorch_defaults[key]:
            continue
        else:
            dropped.append(key)
    for kind in ("criterion", "optimizer"):
        if kind in params:
            name = _torch_name(params[kind], kind)
            if name is None:
                dropped.append(kind)
            else:
                out[kind] = name
    return out


def _same_default(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _skorch_defaults() -> dict:
    from skorch import NeuralNet

    sig = inspect.signature(NeuralNet.__init__).parameters
    return {k: p.default for k, p in sig.items() if p.default is not inspect._empty}


# ---------------------------------------------------------------------------
# save
# ---------------------------------------------------------------------------
class _Writer:
    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}
        self.arrays: dict[str, np.ndarray] = {}

    def weights(self, name: str, module: torch.nn.Module) -> str:
        from safetensors.torch import save as st_save

        state = {
            k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()
        }
        file = f"{name}.safetensors"
        self.members[file] = st_save(state, metadata={"format": FORMAT})
        return file

    def array(self, key: str, value: Any) -> str:
        self.arrays[key] = _text_array(np.asarray(value))
        return key


def _save_smoothed(
    est: Any, w: _Writer, prefix: str, dropped: list, include_training_data: bool = False
) -> dict:

    if not isinstance(est, SmoothedClassifier) or not est.__sklearn_is_fitted__():
        raise TypeError("save needs a fitted SmoothedClassifier (call fit first).")
    params = _params(est, dropped)
    kwargs = est.get_params_for("module")
    fitted_extra = {}
    if include_training_data and getattr(est, "training_inputs_", None) is not None:
        fitted_extra["training_inputs"] = w.array(f"{prefix}training_inputs", est.training_inputs_)
    return {
        "class": "SmoothedClassifier",
        "params": params,
        "network": _network_spec(est.module, kwargs),
        "weights": w.weights(f"{prefix}network", est.module_),
        "fitted": {
            "classes": w.array(f"{prefix}classes", est.classes_),
            "abstain_label": _plain(est.abstain_label_),
            "input_shape": _plain(list(getattr(est, "input_shape_", None) or [])) or None,
            "module_inferred_kwargs": _plain(getattr(est, "module_inferred_kwargs_", {})),
            "n_count_draws": int(getattr(est, "_n_count_draws", 0)),
            "input_stats": _plain(getattr(est, "input_stats_", None)),
            **fitted_extra,
        },
    }


def _save_surrogate(est: Any, w: _Writer, dropped: list, include_training_data: bool) -> dict:

    if not isinstance(est, RRISESurrogate) or not hasattr(est, "smoothed_"):
        raise TypeError("save needs a fitted RRISESurrogate (call fit first).")
    net = est.module_
    members = len(net.members) if isinstance(net, MeanLogProbEnsemble) else 0
    fitted: dict[str, Any] = {
        "root_seed": int(est.root_seed_),
        "input_shape": _plain(list(est.input_shape_)),
        "module_inferred_kwargs": _plain(est.module_inferred_kwargs_),
        "ensemble_members": members,
        "amortization": _plain(getattr(est, "amortization_", None))
        if _jsonable(getattr(est, "amortization_", None))
        else None,
    }
    cal = getattr(est, "calibration_", None)
    if cal is not None:
        fitted["calibration"] = _calibration_state(cal, w)
    if include_training_data and hasattr(est, "train_inputs_"):
        fitted["train_inputs"] = w.array("surrogate_train_inputs", est.train_inputs_)
        fitted["train_counts"] = w.array("surrogate_train_counts", est.train_counts_)
    kwargs = est.get_params_for("module") if est.module is not None else {}
    prep = getattr(est, "preprocessing_", None)
    if prep is not None:  # the surrogate over a Pipeline: its scalers, saved as a Pipeline's
        steps = prep.steps if hasattr(prep, "steps") else [("step", prep)]
        fitted["preprocessing"] = {
            "step_names": [name for name, _ in steps] + [_final_step_name(est)],
            "steps": [_save_scaler(s, i, w, "surrogate_step") for i, (_, s) in enumerate(steps)],
        }
    return {
        "class": "RRISESurrogate",
        "params": _params(est, dropped),
        "network": _network_spec(est.module, kwargs),
        "weights": w.weights("surrogate_network", net),
        "fitted": fitted,
        "smoothed": _save_smoothed(est.smoothed_, w, "base_", dropped, include_training_data),
    }


def _final_step_name(est: Any) -> str:
    """The name of the SmoothedClassifier step of the Pipeline a surrogate was given."""
    pipe = getattr(est.smoothed, "estimator", est.smoothed)  # through a FrozenEstimator
    steps = getattr(pipe, "steps", None)
    return steps[-1][0] if steps else "smoothedclassifier"


def _save_scaler(step: Any, i: int, w: _Writer, prefix: str = "step") -> dict:
    name = type(step).__name__
    if name not in _SCALERS or type(step).__module__.split(".")[0] != "sklearn":
        raise TypeError(
            f"a saved Pipeline may hold only {', '.join(_SCALERS)} before the certifier; got "
            f"{name}. Save the certifier alone and rebuild the preprocessing in code."
        )
    params = step.get_params(deep=False)
    if not _jsonable(params):
        raise TypeError(f"{name} has parameters that are not JSON values: {params}")
    fitted = {}
    for key, val in vars(step).items():
        if not key.endswith("_") or key.startswith("_"):
            continue
        if isinstance(val, np.ndarray):
            fitted[key] = {
                "array": w.array(f"{prefix}{i}_{key}", val),
                "object": val.dtype.kind == "O",
            }
        elif _jsonable(val):
            fitted[key] = {"value": _plain(val)}
        else:
            raise TypeError(f"{name}.{key} cannot be saved safely ({type(val).__name__})")
    return {"class": name, "params": _plain(params), "fitted": fitted}


def save(
    estimator: Any,
    path: str | os.PathLike,
    *,
    include_training_data: bool = False,
    key: bytes | str | None = None,
) -> str:
    """Write a fitted estimator to ``path`` in a format that cannot run code when loaded.

    Parameters
    ----------
    estimator : SmoothedClassifier, RRISESurrogate or Pipeline
        Fitted. A Pipeline may hold scikit-learn scalers (``StandardScaler``,
        ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, ``Normalizer``)
        before a certifier as its last step.
    path : str or path-like
        A directory (created; an existing model directory is replaced), or a
        file ending in ``.zip``. Written atomically: a crash leaves the old
        model or the new one, never a half-written one.
    include_training_data : bool, default=False
        Also store the smoothed classifier's training inputs
        (``training_inputs_``, used by a later ``RRISESurrogate.fit``) and an
        RRISESurrogate's training inputs and counts (``train_inputs_``,
        ``train_counts_``); they can be large and may be private.
    key : bytes or str, optional
        Sign the file: its digest becomes an HMAC-SHA256 under this key, and
        :func:`load` then needs the same key. Without a key the digest is a
        plain SHA-256, which catches damage and casual edits but not someone
        who recomputes it.

    Returns
    -------
    path : str
        The path written.

    Raises
    ------
    TypeError
        If the estimator is not fitted, is of another type, or holds a step
        or module argument that cannot be stored without pickle.
    """
    from sklearn.pipeline import Pipeline

    path = os.fspath(path)
    w = _Writer()
    dropped: list[str] = []
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
    }
    if isinstance(estimator, Pipeline):
        steps = estimator.steps
        pre = [_save_scaler(s, i, w) for i, (_, s) in enumerate(steps[:-1])]
        manifest["estimator"] = "Pipeline"
        manifest["step_names"] = [name for name, _ in steps]
        manifest["steps"] = pre
        manifest["final"] = _save_final(steps[-1][1], w, dropped, include_training_data)
    else:
        manifest["estimator"] = type(estimator).__name__
        manifest["final"] = _save_final(estimator, w, dropped, include_training_data)
    if dropped:
        warnings.warn(
            f"not saved (not JSON values; the loaded estimator uses the defaults): "
            f"{sorted(set(dropped))}",
            UserWarning,
            stacklevel=2,
        )
    manifest["dropped_params"] = sorted(set(dropped))
    buf = io.BytesIO()
    np.savez(buf, **w.arrays)
    w.members[_ARRAYS] = buf.getvalue()
    manifest["files"] = {name: _sha256(data) for name, data in sorted(w.members.items())}
    manifest["digest"] = _digest(manifest, key)
    members = {_MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode(), **w.members}
    if path.endswith(".zip"):
        _write_zip(path, members)
    else:
        _write_dir(path, members)
    return path


def _canonical(manifest: dict) -> bytes:
    """The manifest's bytes under its digest: sorted keys, no whitespace, without "digest"."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise TypeError("key must be non-empty bytes or str.")
    return key


def _digest(manifest: dict, key: bytes | str | None) -> dict:
    """SHA-256 of the canonical manifest (which lists every member's SHA-256), or an
    HMAC-SHA256 of it under ``key``."""
    body = _canonical(manifest)
    if key is None:
        return {"kind": "sha256", "value": hashlib.sha256(body).hexdigest()}
    return {"kind": "hmac-sha256", "value": hmac.new(_key_bytes(key), body, "sha256").hexdigest()}


def _check_digest(manifest: dict, key: bytes | str | None, path: str) -> None:
    found = manifest.get("digest")
    if not (isinstance(found, dict) and isinstance(found.get("value"), str)
            and found.get("kind") in ("sha256", "hmac-sha256")):  # fmt: skip
        raise ModelFileError(f"{path}: the manifest has no valid digest")
    if found["kind"] == "hmac-sha256" and key is None:
        raise ModelFileError(f"{path} is signed with a key: load it with load(path, key=...)")
    if found["kind"] == "sha256" and key is not None:
        raise ModelFileError(
            f"{path} is not signed (plain SHA-256 digest) but a key was given: refusing it"
        )
    want = _digest(manifest, key)["value"]
    if not hmac.compare_digest(want, found["value"]):
        what = "the key is wrong, or " if key is not None else ""
        raise ModelFileError(
            f"{path}: the manifest does not match its digest: {what}the file is damaged or was "
            "edited (a plain digest catches damage and casual edits; sign files with key= "
            "against deliberate ones)"
        )


def _save_final(est: Any, w: _Writer, dropped: list, include_training_data: bool) -> dict:

    if isinstance(est, RRISESurrogate):
        return _save_surrogate(est, w, dropped, include_training_data)
    if isinstance(est, SmoothedClassifier):
        return _save_smoothed(est, w, "", dropped, include_training_data)
    raise TypeError(
        "save writes a SmoothedClassifier, an RRISESurrogate, or a Pipeline ending in one; "
        f"got {type(est).__name__}."
    )


def _write_zip(path: str, members: dict[str, bytes]) -> None:
    def writer(fh: Any) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)

    write_atomic(path, writer)


def _write_dir(path: str, members: dict[str, bytes]) -> None:
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"folder {parent} does not exist")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"{path} exists and is not a directory")
        if os.listdir(path) and not os.path.isfile(os.path.join(path, _MANIFEST)):
            raise FileExistsError(
                f"{path} is a non-empty directory that holds no rrise model; not replacing it"
            )
    tmp = tempfile.mkdtemp(dir=parent, prefix=".rrise-", suffix=".tmp")
    try:
        for name, data in members.items():
            with open(os.path.join(tmp, name), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=".rrise-old-")
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------
def _read_members(path: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the member files it lists, checked against their checksums."""
    if os.path.isdir(path):

        def read_file(name: str) -> bytes:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                raise ModelFileError(f"{path}: member {name} is missing")
            if os.path.getsize(file) > MAX_MEMBER_BYTES:
                raise ModelFileError(f"{path}: member {name} is over {MAX_MEMBER_BYTES} bytes")
            with open(file, "rb") as fh:
                return fh.read()

        return _collect_members(path, read_file, None)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            f"{path} is not an rrise model file (a directory or .zip written by "
            f"rrise_sklearn.save): {exc}"
        ) from None
    with zf:
        names = set(zf.namelist())
        for info in zf.infolist():  # sizes from the central directory, before reading anything
            if info.file_size > MAX_MEMBER_BYTES or info.file_size > MAX_COMPRESSION_RATIO * max(
                info.compress_size, 2**16
            ):
                raise ModelFileError(
                    f"{path}: member {info.filename} unpacks to {info.file_size} bytes from "
                    f"{info.compress_size}; refusing members over {MAX_MEMBER_BYTES} bytes or "
                    f"compressed more than {MAX_COMPRESSION_RATIO}x"
                )

        def read_member(name: str) -> bytes:
            if name not in names:
                raise ModelFileError(f"{path}: member {name} is missing")
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise ModelFileError(f"{path}: member {name} is damaged ({exc})") from None

        return _collect_members(path, read_member, names)


def _collect_members(path: str, read: Any, names: set | None) -> tuple[dict, dict[str, bytes]]:
    raw = read(_MANIFEST)
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{path}: manifest is implausibly large ({len(raw)} bytes)")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an rrise-sklearn model (manifest format field)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in model format {version} by a newer rrise-sklearn; this "
            f"version reads format {FORMAT_VERSION} and older: upgrade rrise-sklearn"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or _ARRAYS not in files:
        raise ModelFileError(f"{path}: manifest lists no member files")
    for name in files:
        if not isinstance(name, str) or not _MEMBER_NAME.match(name):
            raise ModelFileError(f"{path}: manifest lists an invalid member name {name!r}")
    if names is not None:
        extra = names - set(files) - {_MANIFEST}
        if extra:
            raise ModelFileError(f"{path}: unexpected members {sorted(extra)}; refusing the file")
    data = {}
    for name, digest in files.items():
        blob = read(name)
        if _sha256(blob) != digest:
            raise ModelFileError(
                f"{path}: checksum mismatch for {name}: the file is damaged or was modified"
            )
        data[name] = blob
    return manifest, data


class _Reader:
    def __init__(self, path: str, data: dict[str, bytes]) -> None:
        self.path = path
        self.data = data
        try:
            with np.load(io.BytesIO(data[_ARRAYS]), allow_pickle=False) as npz:
                self.arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # noqa: BLE001 - any failure means a bad member
            raise ModelFileError(
                f"{path}: {_ARRAYS} is not a plain numeric archive ({exc})"
            ) from None

    def array(self, key: Any) -> np.ndarray:
        if key not in self.arrays:
            raise ModelFileError(f"{self.path}: array {key!r} is missing from {_ARRAYS}")
        return self.arrays[key]

    def weights(self, name: Any) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as st_load

        if name not in self.data or not str(name).endswith(".safetensors"):
            raise ModelFileError(f"{self.path}: weights member {name!r} is missing")
        try:
            return st_load(self.data[name])
        except Exception as exc:  # noqa: BLE001
            raise ModelFileError(f"{self.path}: {name} is not a safetensors file ({exc})") from None


def _get(section: Any, key: str, path: str) -> Any:
    if not isinstance(section, dict) or key not in section:
        raise ModelFileError(f"{path}: manifest entry {key!r} is missing")
    return section[key]


def _load_weights(net: torch.nn.Module, state: dict, path: str, what: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"{path}: the {what} weights do not fit the rebuilt network ({exc}); pass the "
            "network class the model was trained with (module=...)"
        ) from None


def _check_network_fits(est: Any, state: dict, path: str, what: str) -> None:
    """Refuse network options that ask for another network than the weights hold, before
    building it: every integer option at most the weights' element count, then the network
    built on torch's "meta" device (no memory) must have exactly the weights' shapes."""
    if not inspect.isclass(est.module):
        return  # an instance: the caller built it
    total = sum(int(t.numel()) for t in state.values())
    kwargs = module_kwargs(est)
    for name, value in kwargs.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > max(total, 1):
            raise ModelFileError(
                f"{path}: the {what}'s option {name}={value} exceeds the {total} weights the "
                "file holds"
            )
        if "layer" in name and isinstance(value, int) and value > len(state):
            raise ModelFileError(
                f"{path}: the {what}'s option {name}={value}, but the file holds "
                f"{len(state)} weight tensors"
            )
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in est.module(**kwargs).state_dict().items()}
    except Exception as exc:  # noqa: BLE001 - the class rejects the options
        if not est.module.__module__.startswith("rrise_sklearn."):
            return  # the caller's class may not build on "meta"; its own check is the load
        raise ModelFileError(
            f"{path}: the {what} cannot be built from its options ({exc})"
        ) from None
    held = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != held:
        diff = sorted(set(shapes.items()) ^ set(held.items()))[:4]
        raise ModelFileError(
            f"{path}: the {what}'s options describe other weights than the file holds "
            f"(first differences: {diff})"
        )


def _build_params(spec: dict, path: str, device: Any) -> dict:
    params = dict(_get(spec, "params", path))
    for kind in ("criterion", "optimizer"):
        if kind in params:
            params[kind] = _resolve_torch(params[kind], kind)
    if device is not None:
        params["device"] = device
    dev = str(params.get("device", "cpu"))
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ModelFileError(
            f"{path} was saved with device={dev!r} and no CUDA device is available here; "
            "load it with device='cpu'"
        )
    return params


def _input_stats(stats: Any, path: str) -> dict:
    """The data-scale guard's reference, checked (four numbers, nothing else)."""
    keys = {"min", "max", "std", "whole_numbers"}
    if not isinstance(stats, dict) or set(stats) != keys:
        raise ModelFileError(f"{path}: input_stats must hold exactly {sorted(keys)}")
    out = {k: float(stats[k]) for k in ("min", "max", "std")
           if isinstance(stats[k], (int, float)) and not isinstance(stats[k], bool)}  # fmt: skip
    if len(out) != 3 or not all(np.isfinite(v) for v in out.values()):
        raise ModelFileError(f"{path}: input_stats min/max/std must be finite numbers")
    if not isinstance(stats["whole_numbers"], bool):
        raise ModelFileError(f"{path}: input_stats whole_numbers must be true or false")
    return {**out, "whole_numbers": stats["whole_numbers"]}


def _shape(value: Any, r: _Reader) -> dict:
    if not (isinstance(value, list) and value and all(_is_count(v) and v > 0 for v in value)):
        raise ModelFileError(f"{r.path}: input_shape must be a list of positive integers")
    shape = tuple(int(v) for v in value)
    return {"input_shape_": shape, "n_features_in_": int(math.prod(shape))}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plain_dict(attr: str) -> Any:
    def read(value: Any, r: _Reader) -> dict:
        if not isinstance(value, dict):
            raise ModelFileError(f"{r.path}: {attr.rstrip('_')} must be a mapping")
        return {attr: dict(value)}

    return read


def _count(attr: str) -> Any:
    def read(value: Any, r: _Reader) -> dict:
        if not _is_count(value):
            raise ModelFileError(f"{r.path}: {attr.strip('_')} must be an integer >= 0")
        return {attr: int(value)}

    return read


def _array(attr: str, dtype: Any = None) -> Any:
    def read(value: Any, r: _Reader) -> dict:
        arr = r.array(value)
        return {attr: arr if dtype is None else arr.astype(dtype)}

    return read


# What the loaders restore, by the name in the file: (required, reader -> {attribute: value}).
_SMOOTHED_SHAPE = {
    "input_shape": (False, _shape),  # None: a pretrained module that has not seen an input
    "module_inferred_kwargs": (True, _plain_dict("module_inferred_kwargs_")),
}
_SMOOTHED_FITTED = {
    "n_count_draws": (False, _count("_n_count_draws")),
    "input_stats": (False, lambda v, r: {"input_stats_": _input_stats(v, r.path)}),
    "training_inputs": (False, _array("training_inputs_", np.float32)),
}
_SURROGATE_FITTED = {
    "root_seed": (True, _count("root_seed_")),
    "input_shape": (True, _shape),
    "module_inferred_kwargs": (True, _plain_dict("module_inferred_kwargs_")),
}
_SURROGATE_AFTER = {
    "amortization": (False, _plain_dict("amortization_")),
    "train_inputs": (False, _array("train_inputs_")),
    "train_counts": (False, _array("train_counts_")),
}


def _restore_fitted(est: Any, fitted: dict, table: dict, r: _Reader, **objects: Any) -> None:
    """The one place where loading sets an estimator's fitted attributes.

    ``table`` maps names in the file to ``(required, reader)``; each reader
    checks its value and returns the attributes it stands for. ``objects`` are
    attributes built by the loader itself (networks, the smoothed classifier,
    the calibration from its converter).
    """
    attrs = dict(objects)
    for key, (required, read) in table.items():
        value = _get(fitted, key, r.path) if required else fitted.get(key)
        if value is not None:
            attrs.update(read(value, r))
    for name, value in attrs.items():
        setattr(est, name, value)


def _load_smoothed(spec: dict, r: _Reader, module: Any, device: Any) -> Any:

    if spec.get("class") != "SmoothedClassifier":
        raise ModelFileError(f"{r.path}: expected a SmoothedClassifier entry")
    params = _build_params(spec, r.path, device)
    # written before n_predict existed: predict and predict_proba drew n samples then
    params.setdefault("n_predict", None)
    net_spec = _get(spec, "network", r.path)
    cls = _resolve_module(net_spec, module)
    kwargs = {f"module__{k}": v for k, v in (net_spec.get("kwargs") or {}).items()}
    try:
        est = SmoothedClassifier(cls, **params, **kwargs)
    except TypeError as exc:
        raise ModelFileError(f"{r.path}: invalid SmoothedClassifier parameters ({exc})") from None
    fitted = _get(spec, "fitted", r.path)
    _restore_fitted(est, fitted, _SMOOTHED_SHAPE, r)  # the network is built from these
    state = r.weights(_get(spec, "weights", r.path))
    _check_network_fits(est, state, r.path, "base network")
    try:
        est.initialize()  # skorch rejects unknown parameters here
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{r.path}: invalid SmoothedClassifier parameters ({exc})") from None
    try:  # the abstain label the fit resolved, not the parameter's None
        est._set_classes(r.array(_get(fitted, "classes", r.path)),
                         abstain_label=_get(fitted, "abstain_label", r.path))  # fmt: skip
    except ValueError as exc:
        raise ModelFileError(f"{r.path}: invalid classes ({exc})") from None
    _restore_fitted(est, fitted, _SMOOTHED_FITTED, r)
    _load_weights(est.module_, state, r.path, "base network")
    est.module_.eval()
    return est


def _load_surrogate(spec: dict, r: _Reader, module: Any, device: Any) -> Any:

    smoothed = _load_smoothed(_get(spec, "smoothed", r.path), r, module, device)
    fitted = _get(spec, "fitted", r.path)
    prep = None
    if fitted.get("preprocessing") is not None:  # a surrogate over a Pipeline
        prep, pipe = _load_steps(_get(fitted, "preprocessing", r.path), r, smoothed)
        smoothed = pipe  # the parameter as it was given: the Pipeline
    params = _build_params(spec, r.path, device)
    _drop_removed_options(params, r.path)
    net_spec = _get(spec, "network", r.path)
    cls = None if net_spec.get("class") is None else _resolve_module(net_spec, module)
    kwargs = {f"module__{k}": v for k, v in (net_spec.get("kwargs") or {}).items()}
    try:
        est = RRISESurrogate(smoothed, cls, **params, **kwargs)
    except TypeError as exc:
        raise ModelFileError(f"{r.path}: invalid RRISESurrogate parameters ({exc})") from None
    _restore_fitted(
        est, fitted, _SURROGATE_FITTED, r,
        smoothed_=smoothed if prep is None else smoothed.steps[-1][1], preprocessing_=prep,
    )  # fmt: skip
    state = r.weights(_get(spec, "weights", r.path))
    k = fitted.get("ensemble_members", 0)
    held = {key.split(".")[1] for key in state if key.startswith("members.")}
    if not (isinstance(k, int) and 0 <= k <= MAX_ENSEMBLE_MEMBERS and k == len(held)):
        raise ModelFileError(
            f"{r.path}: ensemble_members={k!r}, but the surrogate's weights hold {len(held)} "
            f"members (at most {MAX_ENSEMBLE_MEMBERS})"
        )
    if cls is not None:  # its own network class: check its size before building it
        member = {
            key.split(".", 2)[2]: t for key, t in state.items() if key.startswith("members.0.")
        }
        _check_network_fits(est, member if k else state, r.path, "surrogate network")
    try:
        est.initialize()  # skorch rejects unknown parameters here (e.g. a removed option)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{r.path}: invalid RRISESurrogate parameters ({exc})") from None
    if k > 0:
        import copy

        members = [
            copy.deepcopy(smoothed.module_) if cls is None else build_module(est) for _ in range(k)
        ]
        _restore_fitted(est, {}, {}, r, module_=MeanLogProbEnsemble(members).to(est.device))
        est.initialize_optimizer()
    _load_weights(est.module_, state, r.path, "surrogate")
    est.module_.eval()
    if "calibration" in fitted:
        cal = _calibration_from_state(_get(fitted, "calibration", r.path), r, est)
    elif "threshold" in fitted:  # format 1
        cal = _calibration_from_fields(fitted, r, est)
    else:
        cal = None
    _restore_fitted(est, fitted, _SURROGATE_AFTER, r, **({"calibration_": cal} if cal else {}))
    return est


#: RRISESurrogate options removed in 0.2 and their old defaults; files written before keep them
_REMOVED_SURROGATE_OPTIONS = {
    "loss": "soft_ce",
    "refine_size": None,
    "augment_scale": 1.0,
    "calibrate": True,
}


def _drop_removed_options(params: dict, path: str) -> None:
    """Drop the surrogate options earlier versions wrote (they only shaped a refit)."""
    if params.get("calibrate", True) is not True:
        raise ModelFileError(
            f"{path} holds an uncalibrated surrogate (calibrate=False, no guarantee), which "
            "this version no longer certifies; refit it with RRISESurrogate(...).fit(X_cal)."
        )
    changed = [
        k
        for k, default in _REMOVED_SURROGATE_OPTIONS.items()
        if k in params and params.pop(k) != default
    ]
    if changed:
        warnings.warn(
            f"{path} was made with the removed option(s) {', '.join(changed)}; the loaded "
            "surrogate certifies as saved, but a refit (fit) would now train differently.",
            UserWarning,
            stacklevel=4,
        )


def _calibration_state(cal: ConformalCalibration, w: _Writer) -> dict:
    """The one converter of a fitted calibration to the manifest (format 2): every field of
    the dataclass, arrays stored in ``arrays.npz`` and named here; a new field needs no edit."""
    state = {}
    for f in dataclasses.fields(cal):
        value = getattr(cal, f.name)
        if isinstance(value, np.ndarray):
            state[f.name] = {"array": w.array(f"calibration_{f.name}", value)}
        else:
            state[f.name] = _plain(value)
    return state


def _calibration_from_state(state: dict, r: _Reader, est: Any) -> ConformalCalibration:
    """The calibration of a format-2 file, checked against the loaded network's weights."""
    names = {f.name for f in dataclasses.fields(ConformalCalibration)}
    if not isinstance(state, dict) or not set(state) <= names:
        extra = sorted(set(state) - names) if isinstance(state, dict) else state
        raise ModelFileError(f"{r.path}: unknown calibration fields {extra!r}")
    kwargs = {}
    for name, value in state.items():
        if isinstance(value, dict) and set(value) == {"array"}:
            value = r.array(value["array"])
        elif name == "stages":
            value = tuple(value) if isinstance(value, list) else value
        kwargs[name] = value
    try:
        cal = ConformalCalibration(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{r.path}: invalid calibration ({exc})") from None
    if cal.network_digest != state_digest(est.module_):
        raise ModelFileError(
            f"{r.path}: the calibration was made for other weights than the file holds"
        )
    return cal


def _calibration_from_fields(fitted: dict, r: _Reader, est: Any) -> Any:
    """The calibration of a format-1 file; fields it predates get what they meant then.

    ``est`` (the loaded surrogate, its network in place) supplies what older files
    left to the estimator's parameters: ``alpha_conf``, ``pac_delta`` and the
    refinement stages; the network digest is that of the loaded weights, which the
    file's checksums tie to the calibration.
    """

    groups = str(
        fitted.get("threshold_groups", "class" if fitted.get("threshold_per_class") else "one")
    )
    grouping = {"one": "pooled", "class": "class", "cap": "cap"}.get(groups)
    if grouping is None:
        raise ModelFileError(f"{r.path}: unknown threshold_groups {groups!r}")
    scores = r.array(fitted["calibration_scores"])
    if "refine_levels" in fitted:
        levels = r.array(fitted["refine_levels"])
    else:  # files from before the multi-stage refinement: one refinement stage at most
        levels = np.zeros(len(scores), dtype=np.int64)
        levels[r.array(fitted["refined"])] = 1
    stages = fitted.get("refine_stages")
    if stages is None:  # files before 0.2: the estimator's n_refine (an int or a list)
        stages = refine_stages(est.n_refine)
    alpha_mc = est.alpha_mc_
    split = _get(fitted, "cap_split", r.path) if grouping == "cap" else {}
    first = fitted.get("first_stage_scores")
    try:
        return ConformalCalibration(
            grouping=grouping,
            alpha_conf=float(fitted.get("alpha_conf", est.alpha_conf)),
            pac_delta=fitted["pac_delta"] if "pac_delta" in fitted else est.pac_delta,
            thresholds=np.atleast_1d(r.array(fitted["threshold"]).astype(np.float64)),
            scores=scores,
            classes=r.array(fitted["calibration_classes"]),
            refine_levels=levels,
            prediction_cap=float(fitted["prediction_cap"]),
            n_samples=int(fitted["calibration_samples"]),
            stages=tuple(int(v) for v in stages),
            setting={k: float(v) for k, v in (fitted.get("calibrated_for") or {}).items()},
            network_digest=state_digest(est.module_),
            first_stage_scores=None if first is None else r.array(first).astype(np.float64),
            first_stage_alpha=(
                float(fitted["first_stage_alpha"])
                if first is not None
                else alpha_mc / (1 + len(stages))
            ),
            own=np.array(split["own"], dtype=bool) if split else None,
            group_sizes=np.array(split["group_sizes"], dtype=np.int64) if split else None,
            pooled_threshold=float(split["pooled_threshold"]) if split else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{r.path}: invalid calibration ({exc!r})") from None


def _load_scaler(spec: dict, r: _Reader) -> Any:
    from sklearn import preprocessing

    name = spec.get("class")
    if name not in _SCALERS:
        raise ModelFileError(f"{r.path}: pipeline step {name!r} is not an allowed scaler")
    step = getattr(preprocessing, name)(**_get(spec, "params", r.path))
    for key, entry in _get(spec, "fitted", r.path).items():
        if not (isinstance(key, str) and key.endswith("_") and key.isidentifier()):
            raise ModelFileError(f"{r.path}: invalid fitted attribute {key!r}")
        if "array" in entry:
            val = r.array(entry["array"])
            if entry.get("object"):
                val = val.astype(object)
        else:
            val = entry.get("value")
        setattr(step, key, val)
    return step


def load(
    path: str | os.PathLike,
    *,
    module: Any = None,
    device: Any = None,
    key: bytes | str | None = None,
) -> Any:
    """Read an estimator written by :func:`save`; nothing in the file is executed.

    Parameters
    ----------
    path : str or path-like
        The directory or ``.zip`` file written by :func:`save`.
    module : torch.nn.Module class or instance, or a list of them, optional
        The network classes the model was trained with, when they are not in
        :mod:`rrise_sklearn.nets` (a model file names its classes, but
        rrise-sklearn never imports what a file names). Matched by dotted
        name, then by class name; a single class is used for every network
        not from :mod:`rrise_sklearn.nets`.
    device : str, optional
        Override the saved ``device`` (e.g. ``"cpu"`` for a model trained on
        a GPU).
    key : bytes or str, optional
        The key a file was signed with (``save(..., key=...)``); needed for
        signed files, refused for unsigned ones.

    Returns
    -------
    estimator : SmoothedClassifier, RRISESurrogate or Pipeline

    Notes
    -----
    What the checks cover: every member's SHA-256 is in the manifest, and the
    manifest is covered by a digest, so a damaged or edited file (``sigma``
    changed in ``manifest.json``, say) is refused. A plain digest does not stop
    someone who recomputes it; a signed file (``key=``) does, as long as the
    key is secret. Before anything is built, member sizes (at most
    ``MAX_MEMBER_BYTES``, zip members compressed at most
    ``MAX_COMPRESSION_RATIO`` times) and the networks' parameter counts are
    checked against the weights the file holds, so a load never allocates much
    more than the file's uncompressed weights. Files of format 1 (before
    0.2) have no digest: they load, with a warning.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a model file, is of a newer format, is damaged or
        was modified (checksum or digest), is signed and no (or another) key
        is given, holds unexpected or oversized members, or names a network
        class that is neither in :mod:`rrise_sklearn.nets` nor passed. Any
        malformed content is reported as this error, naming what was wrong.
    """
    path = os.fspath(path)
    try:
        return _load(path, module, device, key)
    except (ModelFileError, FileNotFoundError):
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
            RecursionError, OverflowError, MemoryError, UnicodeError) as exc:  # fmt: skip
        raise ModelFileError(f"{path}: malformed model file ({type(exc).__name__}: {exc})") from exc


def _has_calibration_section(manifest: dict) -> bool:
    final = manifest.get("final")
    fitted = final.get("fitted") if isinstance(final, dict) else None
    return isinstance(fitted, dict) and "calibration" in fitted


def _load(path: str, module: Any, device: Any, key: Any) -> Any:
    manifest, data = _read_members(path)
    if manifest["format_version"] >= 2:
        _check_digest(manifest, key, path)
    elif (
        manifest["format_version"] < 1 or "digest" in manifest or _has_calibration_section(manifest)
    ):
        raise ModelFileError(
            f"{path} claims format {manifest['format_version']} but carries fields of format 2 "
            "(a digest or a calibration section): refusing a downgraded file"
        )
    else:
        if key is not None:
            raise ModelFileError(f"{path} is of format 1, which has no signature; key= refused")
        warnings.warn(
            f"{path} is a model file of format 1 (before rrise-sklearn 0.2): its manifest is "
            "not covered by a digest. Re-save it with rrise_sklearn.save to protect it.",
            UserWarning,
            stacklevel=3,
        )
    r = _Reader(path, data)
    kind = manifest.get("estimator")
    if kind not in _ESTIMATORS:
        raise ModelFileError(f"{path}: unknown estimator {kind!r}")
    final_spec = _get(manifest, "final", path)
    final_kind = final_spec.get("class") if isinstance(final_spec, dict) else None
    if final_kind == "RRISESurrogate":
        final = _load_surrogate(final_spec, r, module, device)
    elif final_kind == "SmoothedClassifier":
        final = _load_smoothed(final_spec, r, module, device)
    else:
        raise ModelFileError(f"{path}: unknown estimator {final_kind!r}")
    if kind != "Pipeline":
        return final

    return _load_steps(manifest, r, final)[1]


def _load_steps(spec: dict, r: _Reader, final: Any) -> tuple[Any, Any]:
    """``(the scalers as a Pipeline, the Pipeline of the scalers and final)`` of a step list."""
    from sklearn.pipeline import Pipeline

    names = _get(spec, "step_names", r.path)
    steps_spec = _get(spec, "steps", r.path)
    if not (
        isinstance(names, list)
        and isinstance(steps_spec, list)
        and len(names) == len(steps_spec) + 1
        and len(steps_spec) >= 1
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names)
    ):
        raise ModelFileError(f"{r.path}: pipeline steps are inconsistent")
    steps = [_load_scaler(s, r) for s in steps_spec]
    pipe = Pipeline(list(zip(names, [*steps, final], strict=True)))
    return pipe[:-1], pipe


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a model written by :func:`save` (no full check)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, _MANIFEST))
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return _MANIFEST in zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def _method_save(self: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """Deprecated: use :func:`rrise_sklearn.save` (``rrise_sklearn.save(estimator, path)``)."""
    warnings.warn(
        f"{type(self).__name__}.save(path) is deprecated: use rrise_sklearn.save(estimator, "
        "path) (the method goes in the next release).",
        FutureWarning,
        stacklevel=2,
    )
    return save(self, path, **kwargs)


def _method_load(cls: Any, path: str | os.PathLike, *, module: Any = None,
                 device: Any = None) -> Any:  # fmt: skip
    """Deprecated: use :func:`rrise_sklearn.load` (it checks nothing about the type).

    Raises :class:`ModelFileError` if the file holds another estimator type.
    """
    warnings.warn(
        f"{cls.__name__}.load(path) is deprecated: use rrise_sklearn.load(path) (the method "
        "goes in the next release).",
        FutureWarning,
        stacklevel=2,
    )
    est = load(path, module=module, device=device)
    if not isinstance(est, cls):
        raise ModelFileError(
            f"{os.fspath(path)} holds a {type(est).__name__}, not a {cls.__name__}"
        )
    return est


# The estimators' save/load methods of earlier versions, for one release. Set here, so that
# the estimators never import persistence (it imports them: one way).
for _cls in (SmoothedClassifier, RRISESurrogate):
    _cls.save = _method_save
    _cls.load = classmethod(_method_load)
del _cls

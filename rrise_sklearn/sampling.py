"""The Monte Carlo engine: class counts of a base classifier under Gaussian noise.

:func:`monte_carlo_counts` is the only place in the package that draws
smoothing noise. Certification, prediction, surrogate targets, calibration,
verification and the command line all go through it.

How the noise is organised (and why results do not depend on ``batch_size``):

* Inputs are split into fixed *noise groups* of ``noise_sharing`` consecutive
  inputs. Samples are split into fixed *noise blocks* of ``S`` samples (``S``
  depends only on the input size). Block ``c`` of group ``g`` is drawn from a
  counter-based Philox generator whose key is the state of
  ``SeedSequence(random_state, spawn_key=(g, c))``, so every block is a pure
  function of ``(random_state, g, c)``. On the CPU the key has 128 bits
  (numpy's ``Philox``); on CUDA devices it has 64 bits (torch's Philox
  generator, seeded with the full 64-bit value). Either way two blocks repeat
  only if their keys collide: among ``1e9`` blocks the chance of any
  collision is about ``1.5e-21`` on the CPU and ``2.7e-2`` on CUDA (birthday
  bound, ``N^2 / 2^(bits + 1)``). (A
  ``torch.Generator`` on the CPU keeps only 32 bits of its seed, so blocks
  seeded that way repeat by the birthday bound after about ``1e5`` blocks; the
  engine does not use it.)
* All inputs of a group see the same noise block. Each input therefore still
  sees ``n`` i.i.d. draws of ``N(0, sigma^2 I)`` and each certificate keeps its
  guarantee; certificates of different inputs *in the same group* are
  dependent. Drawing the noise once for several inputs is what makes the engine
  fast for small models. Pass ``noise_sharing=1`` when the inputs' Monte Carlo
  results must be independent (conformal calibration does).
* Forward batches are packed with rows of several blocks (and blocks larger
  than a batch are split), so batches are full, memory stays at about
  ``(batch_size + S)`` times the input size, and only the class counts move
  back to the host.

Because batches are formed after the noise is fixed, the counts are identical
for every ``batch_size``, every ``n_jobs`` and every joblib backend. The
CPU and CUDA generators differ, so the same seed gives different (equally
valid) counts on different device types.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from sklearn.utils.parallel import Parallel, delayed

from ._io import write_atomic

__all__ = [
    "MonteCarloCounts",
    "tuned_batch_size",
    "block_noise",
    "check_distinct_streams",
    "monte_carlo_counts",
    "noise_block_size",
    "resolve_seed",
]

_MAX_BLOCK_SAMPLES = 512
_BLOCK_BUDGET = 2**21  # floats per noise block (8 MiB in float32)
_PREFETCH_MIN = 2**14  # floats per block from which the CPU draws the next block in a thread
_BATCH_CANDIDATES = (256, 1024, 4096)
_TUNE_MIN_ROWS = 50_000  # smaller calls are not timed (timing would cost more than it saves)
_UNTUNED_ROWS = 1024  # calls too small to time (or plain callables) use this (or the cap)
_TUNE_MIN_SECONDS = 0.05  # per candidate and pass; two interleaved passes, best kept
_ACTIVATION_BUDGET = 256 * 2**20  # bytes of live activations a forward batch may need
# CUDA devices: larger sizes are timed too, and the activation budget is a share of the
# device's free memory (on an H100 the raw forward of every benchmarked network was fastest
# at 65,536 rows, and the 256 MiB cap held the image CNNs' engine to 0.54-0.76 of it)
_CUDA_EXTRA_CANDIDATES = (16_384, 65_536)
_CUDA_ACTIVATION_SHARE = 4  # at most a quarter of the free device memory ...
_CUDA_ACTIVATION_MAX = 8 * 2**30  # ... and at most 8 GiB
_row_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {key: bytes}
_tuned_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {key: rows}


class MonteCarloCounts(np.ndarray):
    """Class counts (an ``int64`` array) that remember the noise stream they came from.

    :func:`monte_carlo_counts` returns this type. ``noise_key`` is the root
    entropy of the stream (see :func:`resolve_seed`): two arrays with the same
    key were drawn from the same noise, position by position, and must never be
    pooled into one bound (:func:`check_distinct_streams`). Slices and views
    keep the key; arithmetic results are plain arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from rrise_sklearn.sampling import MonteCarloCounts
    >>> c = MonteCarloCounts(np.array([[3, 1]]), noise_key=7)
    >>> c[:, 0].noise_key, type(c / 4).__name__
    (7, 'ndarray')
    """

    noise_key: int | None

    def __new__(cls, counts: Any, noise_key: int | None = None) -> MonteCarloCounts:
        obj = np.asarray(counts).view(cls)
        obj.noise_key = noise_key
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.noise_key = getattr(obj, "noise_key", None)

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        arr = np.asarray(arr).view(np.ndarray)
        return arr[()] if return_scalar else arr

    def __reduce__(self) -> Any:
        return (MonteCarloCounts, (np.asarray(self).view(np.ndarray), self.noise_key))


def check_distinct_streams(**named: Any) -> None:
    """Refuse Monte Carlo results that share a noise stream before they are pooled.

    Each keyword is a name and either a :class:`MonteCarloCounts`, an int
    stream key, or ``None`` (unknown provenance, e.g. counts loaded from disk:
    not checkable). Raises ``ValueError`` naming the pair that shares a stream.

    Examples
    --------
    >>> from rrise_sklearn.sampling import check_distinct_streams
    >>> check_distinct_streams(counts=1, refine_counts=2)
    >>> check_distinct_streams(counts=1, refine_counts=1)
    Traceback (most recent call last):
    ...
    ValueError: counts and refine_counts were drawn from the same noise stream ...
    """
    seen: dict[int, str] = {}
    for name, val in named.items():
        key = getattr(val, "noise_key", val)
        if key is None or isinstance(key, np.ndarray):
            continue
        key = int(key)
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {name} were drawn from the same noise stream (seed entropy "
                f"{key}), so they reuse the same noise draws and a bound that combines them "
                "counts those draws twice. Draw each with its own random_state (or call "
                "sample_counts without random_state: every call then uses a fresh stream), or "
                "let the estimator draw them."
            )
        seen[key] = name


def noise_block_size(n_features: int, n: int) -> int:
    """Samples per noise block: a power of two, at most 512, about 8 MiB of noise at most.

    Depends only on the input size and ``n``, never on the batch size.

    Examples
    --------
    >>> from rrise_sklearn.sampling import noise_block_size
    >>> noise_block_size(64, 10_000), noise_block_size(3 * 224 * 224, 10_000)
    (512, 8)
    """
    cap = max(1, _BLOCK_BUDGET // max(1, int(n_features)))
    size = min(_MAX_BLOCK_SAMPLES, 2 ** int(math.floor(math.log2(cap))))
    return int(max(1, min(size, int(n))))


def resolve_seed(random_state: Any) -> int:
    """Turn ``random_state`` into a root entropy integer for ``SeedSequence``.

    ``None`` draws fresh entropy (results vary call to call); an int is used as
    is; a ``numpy.random.Generator`` / ``RandomState`` / ``SeedSequence`` is
    consumed to give an int.

    Examples
    --------
    >>> from rrise_sklearn.sampling import resolve_seed
    >>> resolve_seed(7)
    7
    """
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, np.random.SeedSequence):
        hi, lo = random_state.generate_state(2, np.uint64)
        return int(hi) << 64 | int(lo)  # 128 bits: distinct streams stay distinct
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative int; got {random_state}.")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        hi, lo = random_state.integers(0, 2**64, size=2, dtype=np.uint64)
        return int(hi) << 64 | int(lo)
    if isinstance(random_state, np.random.RandomState):
        words = random_state.randint(0, 2**32, size=4, dtype=np.uint64)
        return int(sum(int(w) << (32 * i) for i, w in enumerate(words)))
    raise ValueError(
        "random_state must be None, an int, a numpy SeedSequence, Generator or RandomState; "
        f"got {random_state!r}."
    )


def _block_key(root: int, group: int, block: int) -> np.ndarray:
    """128-bit Philox key (two uint64 words) of noise block ``block`` of group ``group``."""
    return np.random.SeedSequence(root, spawn_key=(group, block)).generate_state(2, np.uint64)


def block_noise(
    root: int,
    group: int,
    block: int,
    shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal noise of one noise block, a pure function of ``(root, group, block)``.

    On the CPU: numpy's counter-based ``Philox`` generator keyed with 128 bits
    from ``SeedSequence(root, spawn_key=(group, block))``. On other devices:
    torch's generator of that device (Philox4x32-10 on CUDA), seeded with the
    first 64-bit word of the same state (torch keeps all 64 bits there).

    Parameters
    ----------
    root : int
        Root entropy (see :func:`resolve_seed`).
    group, block : int
        Noise group and block index.
    shape : tuple of int
        Shape of the noise tensor.
    device : torch.device or str, default="cpu"
        Where the noise is made.
    generator : torch.Generator, optional
        A generator of ``device`` to reseed (saves creating one per block on
        non-CPU devices); ignored on the CPU.

    Returns
    -------
    noise : torch.Tensor of float32

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.sampling import block_noise
    >>> a = block_noise(0, 0, 0, (2, 3))
    >>> torch.equal(a, block_noise(0, 0, 0, (2, 3))), torch.equal(a, block_noise(0, 1, 0, (2, 3)))
    (True, False)
    """
    key = _block_key(root, group, block)
    dev = torch.device(device)
    if dev.type == "cpu":
        rng = np.random.Generator(np.random.Philox(key=key))
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    gen = generator if generator is not None else torch.Generator(device=dev)
    gen.manual_seed(int(key[0]))
    return torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)


#: the most Monte Carlo samples per input the engine accepts (counts are int64; a run of
#: 1e15 samples would take years on any device)
MAX_SAMPLES = 10**15

#: the largest sigma the engine accepts: noise is float32 (largest value 3.4e38), and
#: x + sigma * z for Gaussian draws z up to about 8 must stay finite
MAX_SIGMA = 1e30


class NonFiniteScoresError(ValueError):
    """The network returned NaN or infinite scores: no counts, and so no certificate."""


def non_finite_message(n_bad: int, n_rows: int, what: str = "noisy inputs") -> str:
    return (
        f"the network returned non-finite scores (NaN or inf) for {n_bad} of {n_rows} {what}: "
        "a broken network (NaN or inf weights), a sigma too large for the input dtype, or "
        "inputs out of range. A non-finite score is not a vote for a class: no counts and no "
        "certificate are given. Check the weights (torch.isfinite) and the inputs' scale."
    )


def _module_device(forward: Any) -> torch.device:
    if isinstance(forward, torch.nn.Module):
        for p in forward.parameters():
            return p.device
        for b in forward.buffers():
            return b.device
    return torch.device("cpu")


def _to_classes(out: Any, n_classes: int, rows: int, device: torch.device) -> torch.Tensor:
    """Turn a forward output (scores or class indices) into int64 class indices."""
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out), device=device)
    if out.ndim == 2:
        if out.shape != (rows, n_classes):
            raise ValueError(
                f"forward returned scores of shape {tuple(out.shape)}; expected ({rows}, "
                f"{n_classes}) = (batch rows, n_classes). Check n_classes."
            )
        return out.argmax(dim=1)
    if out.ndim == 1 and out.shape[0] == rows:
        if out.is_floating_point():
            if not torch.all(out == torch.round(out)):
                raise ValueError(
                    "forward returned a 1-D float array that is not class indices; return "
                    "scores of shape (batch, n_classes) or integer class indices."
                )
        cls = out.to(torch.int64)
        if rows and (int(cls.min()) < 0 or int(cls.max()) >= n_classes):
            raise ValueError(
                f"forward returned class indices outside [0, {n_classes}); "
                "return indices 0..n_classes-1 (not the original labels)."
            )
        return cls.to(device)
    raise ValueError(
        f"forward returned an array of shape {tuple(out.shape)}; expected scores "
        f"({rows}, {n_classes}) or class indices ({rows},)."
    )


def _noise_blocks(
    root: int,
    first_group: int,
    n_groups: int,
    n_blocks: int,
    S: int,
    n: int,
    feat: tuple[int, ...],
    sigma: float,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """The scaled noise blocks of groups ``first_group ..`` in order (group-major).

    On the CPU the next block is drawn in a helper thread while the caller
    evaluates the current one (numpy releases the GIL while it fills an
    array). Every block is a pure function of ``(root, group, block)``, so the
    prefetching changes nothing but the time.
    """
    gen = None if device.type == "cpu" else torch.Generator(device=device)

    def make(g: int, c: int) -> torch.Tensor:
        s = min(S, n - c * S)
        return block_noise(root, first_group + g, c, (s, *feat), device, gen).mul_(sigma)

    # (group, block) pairs made as they are needed: memory does not grow with n
    order = ((g, c) for g in range(n_groups) for c in range(n_blocks))
    total = n_groups * n_blocks
    big = S * math.prod(feat) >= _PREFETCH_MIN  # tiny blocks: the hand-off costs more
    if device.type != "cpu" or total < 2 or not big:
        for g, c in order:
            yield make(g, c)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(make, *next(order))
        for step in range(total):
            noise = pending.result()
            if step + 1 < total:
                pending = pool.submit(make, *next(order))
            yield noise


def _count_groups(
    forward: Any,
    X: torch.Tensor,
    first_group: int,
    *,
    sigma: float,
    n: int,
    n_classes: int,
    batch_size: int,
    root: int,
    noise_sharing: int,
    device: torch.device,
    progress: Any = None,
) -> np.ndarray:
    """Counts for the inputs X, which start at noise group ``first_group``."""
    is_torch = isinstance(forward, torch.nn.Module)
    n_inputs = X.shape[0]
    feat = tuple(X.shape[1:])
    d = int(np.prod(feat)) if feat else 1
    S = noise_block_size(d, n)
    n_blocks = -(-n // S)
    counts = torch.zeros(n_inputs * n_classes, dtype=torch.int64, device=device)
    buf = torch.empty((batch_size, *feat), dtype=torch.float32, device=device)
    owner = torch.empty(batch_size, dtype=torch.int64, device=device)
    row_ids = torch.arange(batch_size, device=device)  # made once; whole inputs: row r -> r // s
    ones = torch.ones(batch_size, dtype=torch.int64, device=device)
    # rows with a non-finite score, counted on the device (no sync per batch) and checked
    # before any count is returned
    n_bad = torch.zeros((), dtype=torch.int64, device=device)
    fill = 0

    def flush() -> None:
        nonlocal fill
        if fill == 0:
            return
        batch = buf[:fill]
        if is_torch:
            out = forward(batch)
        else:
            out = forward(batch.cpu().numpy())
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out), device=device)
        if out.is_floating_point() and out.ndim == 2:
            n_bad.add_((~torch.isfinite(out)).any(dim=1).sum())
        cls = _to_classes(out, n_classes, fill, device)
        counts.index_add_(0, owner[:fill].mul_(n_classes).add_(cls), ones[:fill])
        fill = 0

    n_groups = -(-n_inputs // noise_sharing)
    blocks = _noise_blocks(root, first_group, n_groups, n_blocks, S, n, feat, sigma, device)
    try:
        for g in range(n_groups):
            lo, hi = g * noise_sharing, min((g + 1) * noise_sharing, n_inputs)
            xg = X[lo:hi]
            m = hi - lo
            for _ in range(n_blocks):
                noise = next(blocks)
                s = noise.shape[0]
                rows = m * s
                r0 = 0
                while r0 < rows:
                    room = batch_size - fill
                    i0, j0 = divmod(r0, s)
                    if j0 == 0 and room >= s:
                        # whole inputs: one broadcast add of the shared noise block
                        k = min(m - i0, room // s)
                        take = k * s
                        dst = buf[fill : fill + take].view(k, s, *feat)
                        torch.add(xg[i0 : i0 + k].unsqueeze(1), noise.unsqueeze(0), out=dst)
                        dst_owner = owner[fill : fill + take]
                        torch.floor_divide(row_ids[:take], s, out=dst_owner).add_(lo + i0)
                    else:
                        # part of one input's samples (batch boundary inside an input)
                        take = min(s - j0, room)
                        torch.add(xg[i0], noise[j0 : j0 + take], out=buf[fill : fill + take])
                        owner[fill : fill + take] = lo + i0
                    fill += take
                    r0 += take
                    if fill == batch_size:
                        flush()
            if progress is not None:
                progress.update(m)
    finally:
        blocks.close()
    flush()
    if int(n_bad):
        raise NonFiniteScoresError(non_finite_message(int(n_bad), n_inputs * n))
    return counts.view(n_inputs, n_classes).cpu().numpy()


def activation_bytes_per_row(forward: Any, X: torch.Tensor) -> int:
    """Estimated live activation memory of one input row in a forward pass (bytes).

    Three times the largest output of any leaf module on a 2-row batch (an
    input, an output and one skip connection alive at once), at least the
    input row itself; ``0`` for callables that are not torch modules.
    Remembered per module, input shape and device.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.sampling import activation_bytes_per_row
    >>> activation_bytes_per_row(torch.nn.Linear(4, 1000), torch.zeros(3, 4))
    12000
    """
    if not isinstance(forward, torch.nn.Module):
        return 0
    key = (tuple(X.shape[1:]), str(X.device))
    cache = _row_bytes.setdefault(forward, {})
    if key in cache:
        return cache[key]
    largest = [X[:1].element_size() * X[:1].numel()]

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.element_size() * output.numel() // 2)

    leaves = [m for m in forward.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        forward(X[:1].expand(2, *X.shape[1:]).contiguous())
    finally:
        for h in handles:
            h.remove()
    cache[key] = 3 * int(largest[0])
    return cache[key]


def _allowed_batches(per_row: int, device_type: str, free_bytes: int | None = None) -> list[int]:
    """Batch sizes the tuner may pick for rows of ``per_row`` activation bytes.

    CPU (and other devices): 256, 1,024 and 4,096 rows within 256 MiB of live
    activations. CUDA: also 16,384 and 65,536 rows, within a quarter of
    ``free_bytes`` (the device's free memory), at most 8 GiB. Sizes above the
    cap are dropped; if none is left, the cap itself.
    """
    candidates, budget = _BATCH_CANDIDATES, _ACTIVATION_BUDGET
    if device_type == "cuda":
        candidates = _BATCH_CANDIDATES + _CUDA_EXTRA_CANDIDATES
        if free_bytes is not None:
            budget = max(budget, min(free_bytes // _CUDA_ACTIVATION_SHARE, _CUDA_ACTIVATION_MAX))
    cap = max(1, budget // per_row) if per_row else candidates[-1]
    return [b for b in candidates if b <= cap] or [int(cap)]


def tuned_batch_size(forward: Any, X: torch.Tensor, total_rows: int) -> int:
    """Forward batch rows for ``forward`` on inputs like ``X``: timed once, then remembered.

    Batches are capped so that a forward pass needs at most about 256 MiB of
    live activations (:func:`activation_bytes_per_row`): for 3x32x32 images
    with the small CNN that is 256 rows, and memory stays bounded by the
    batch whatever ``n``. The first call for a torch module, input shape and
    device with at least ``50,000`` rows of work then times clean forward
    passes at the allowed sizes among 256, 1,024 and 4,096 rows (two
    interleaved passes of at least 0.05 s each) and keeps the fastest. No
    single size suits every network: on 2 CPU cores
    (``benchmarks/bench_engine.py``) the digits MLP ran fastest at 1,024 rows
    (at 4,096 the engine reached 0.55 of that), the CNNs at 256. Smaller calls
    use the size timed earlier for the same module and shape, else 1,024 rows
    or the cap (fewer when there is less work), as do plain callables. On
    CUDA devices the sizes 16,384 and 65,536 are timed too and the cap is a
    quarter of the device's free memory (at most 8 GiB): on an H100 the
    256 MiB cap held the image CNNs to 256 rows, where the engine ran
    1.24-1.74x slower than at 4,096 rows (``bench_engine.py --device cuda``).
    The counts never depend on the batch size.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.sampling import tuned_batch_size
    >>> tuned_batch_size(torch.nn.Linear(4, 2), torch.zeros(3, 4), total_rows=300)
    300
    """
    per_row = activation_bytes_per_row(forward, X)
    free = None
    if X.device.type == "cuda":
        free = int(torch.cuda.mem_get_info(X.device)[0])
    allowed = _allowed_batches(per_row, X.device.type, free)
    key = (tuple(X.shape[1:]), str(X.device))
    cache = _tuned_batches.setdefault(forward, {}) if isinstance(forward, torch.nn.Module) else {}
    if key in cache:  # timed before: use it for small calls too
        return int(min(cache[key], max(1, total_rows)))
    # untimed: 1,024 rows (or the cap); 4,096 was the slowest size for both networks measured
    default = _UNTUNED_ROWS if _UNTUNED_ROWS in allowed else allowed[-1]
    if not isinstance(forward, torch.nn.Module) or total_rows < _TUNE_MIN_ROWS:
        return int(min(default, max(1, total_rows)))
    if len(allowed) == 1:
        return allowed[0]
    batches = {b: X[:1].expand(b, *X.shape[1:]).contiguous() for b in allowed}
    rates: dict[int, float] = {b: 0.0 for b in allowed}
    for b in allowed:
        forward(batches[b]).argmax(dim=1)  # warm-up (allocations, kernels)
    for _ in range(2):  # interleaved passes: a noisy moment does not decide alone
        for b in allowed:
            reps = 0
            if X.device.type == "cuda":
                torch.cuda.synchronize(X.device)
            t0 = time.perf_counter()
            while reps < 2 or time.perf_counter() - t0 < _TUNE_MIN_SECONDS:
                forward(batches[b]).argmax(dim=1)
                reps += 1
                if X.device.type == "cuda":
                    torch.cuda.synchronize(X.device)
            rates[b] = max(rates[b], reps * b / max(time.perf_counter() - t0, 1e-9))
    cache[key] = max(rates, key=rates.get)
    return cache[key]


def _check_engine_args(
    sigma: Any, n: Any, n_classes: Any, noise_sharing: Any, batch_size: Any
) -> tuple[float, int, int, int]:
    """The engine's numeric arguments, checked; ``(sigma, n, n_classes, noise_sharing)``."""
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0; got sigma={sigma!r}.")
    if sigma > MAX_SIGMA:
        raise ValueError(
            f"sigma={sigma!r} is above {MAX_SIGMA:g}: the noise is float32 (largest value "
            "3.4e38) and the noisy inputs would overflow. Rescale the inputs instead."
        )
    checked = [("n", n), ("n_classes", n_classes), ("noise_sharing", noise_sharing)]
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        checked.append(("batch_size", batch_size))
    for name, val in checked:
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(
                f"{name} must be an integer >= 1"
                + (' or "auto"' if name == "batch_size" else "")
                + f"; got {name}={val!r}."
            )
    if int(n) > MAX_SAMPLES:
        raise ValueError(
            f"n={n} is above {MAX_SAMPLES:.0e} samples per input: counts and schedules are "
            "int64 and such a run would not end; use a smaller n (CERTIFY's radius grows only "
            "like sqrt(log n))."
        )
    return sigma, int(n), int(n_classes), int(noise_sharing)


def monte_carlo_counts(
    forward: torch.nn.Module | Callable[[np.ndarray], Any],
    X: Any,
    *,
    sigma: float,
    n: int,
    n_classes: int,
    batch_size: int | str = "auto",
    random_state: Any = None,
    device: str | torch.device | None = None,
    noise_sharing: int = 16,
    n_jobs: int | None = None,
    verbose: int = 0,
    desc: str = "Monte Carlo",
) -> np.ndarray:
    """Count the classes a base classifier gives to ``n`` noisy copies of each input.

    For every input ``x`` draws ``eps_1..eps_n ~ N(0, sigma^2 I)`` and counts
    ``f(x + eps_j)`` per class.

    Parameters
    ----------
    forward : torch.nn.Module or callable
        The base classifier ``f``.

        * A ``torch.nn.Module`` gets float32 tensor batches of shape
          ``(rows, *X.shape[1:])`` on ``device`` and returns either scores
          (logits or probabilities) of shape ``(rows, n_classes)``, reduced with
          ``argmax``, or int class indices of shape ``(rows,)``. It runs in eval
          mode under ``torch.inference_mode`` (its training flag is restored).
        * Any other callable (e.g. a fitted sklearn model's ``predict``) gets
          float32 **numpy** batches and returns class indices ``0..n_classes-1``
          (or scores) as numpy. Slower: every batch goes through the host.
    X : array-like or torch.Tensor of shape (n_inputs, ...)
        Inputs, any trailing shape the model accepts.
    sigma : float
        Noise standard deviation, in the units of ``X``.
    n : int
        Noisy samples per input.
    n_classes : int
        Number of classes of ``f``.
    batch_size : int or "auto", default="auto"
        Rows per forward pass. Memory is about ``(batch_size + 512)`` times one
        input. Does not change the result. ``"auto"``: timed once per module,
        input shape and device (:func:`tuned_batch_size`).
    random_state : int, SeedSequence, Generator or None, default=None
        Seed. The same seed gives the same counts for every ``batch_size``,
        ``n_jobs`` and joblib backend on one device type.
    device : str or torch.device, optional
        Where noise is drawn and the model runs; default: the module's device,
        else CPU. The module must already be on this device.
    noise_sharing : int, default=16
        Consecutive inputs that share each noise block (see module docs): each
        input still sees ``n`` i.i.d. draws; ``1`` makes inputs independent.
        Part of the seed structure: changing it changes the counts.
    n_jobs : int, optional
        Workers for joblib (``sklearn.utils.parallel``); ``None`` follows an
        enclosing ``joblib.parallel_config`` (e.g. a Dask backend), else runs
        in this process.
    verbose : int, default=0
        ``> 0`` shows a tqdm progress bar over inputs, labelled ``desc``.
    desc : str, default="Monte Carlo"
        The bar's label (the estimators name their phases: "selection
        n0=100", "estimation n=10000", "targets n=2000", ...).

    Returns
    -------
    counts : MonteCarloCounts of shape (n_inputs, n_classes), dtype int64
        Each row sums to ``n``. An ndarray whose ``noise_key`` names the noise
        stream (the same ``random_state`` gives the same key and the same noise).

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.sampling import monte_carlo_counts
    >>> f = torch.nn.Linear(2, 2)
    >>> counts = monte_carlo_counts(f, [[0.0, 1.0], [1.0, 0.0]], sigma=0.5, n=1000,
    ...                             n_classes=2, random_state=0)
    >>> counts.shape, counts.sum(axis=1).tolist()
    ((2, 2), [1000, 1000])
    """
    sigma, n, n_classes, noise_sharing = _check_engine_args(
        sigma, n, n_classes, noise_sharing, batch_size
    )
    auto_batch = batch_size == "auto"
    if not callable(forward):
        raise TypeError(f"forward must be a torch module or a callable; got {type(forward)}.")
    dev = torch.device(device) if device is not None else _module_device(forward)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32) if not isinstance(X, torch.Tensor) else X)
    Xt = Xt.to(device=dev, dtype=torch.float32)
    if Xt.ndim < 1 or Xt.shape[0] == 0:
        return MonteCarloCounts(np.zeros((0, n_classes), dtype=np.int64))
    if Xt.ndim == 1:
        raise ValueError("X must have shape (n_inputs, ...); got a 1-D array. Use X[None].")
    if not torch.isfinite(Xt).all():
        raise ValueError("X contains NaN or infinity; clean or impute the inputs first.")
    root = resolve_seed(random_state)
    n_inputs = Xt.shape[0]
    n_groups = -(-n_inputs // noise_sharing)

    was_training = isinstance(forward, torch.nn.Module) and forward.training
    if isinstance(forward, torch.nn.Module):
        forward.eval()
    kwargs: dict[str, Any] = dict(
        sigma=sigma,
        n=n,
        n_classes=n_classes,
        root=root,
        noise_sharing=noise_sharing,
        device=dev,
    )
    try:
        with torch.inference_mode():
            kwargs["batch_size"] = (
                tuned_batch_size(forward, Xt, n_inputs * n) if auto_batch else int(batch_size)
            )
            workers = 1 if n_jobs is None and not _in_parallel_config() else n_jobs
            if workers == 1 or n_groups == 1:
                bar = _progress(n_inputs, verbose, desc)
                try:
                    return MonteCarloCounts(
                        _count_groups(forward, Xt, 0, progress=bar, **kwargs), noise_key=root
                    )
                finally:
                    if bar is not None:
                        bar.close()
            # Chunks of whole noise groups; seeds depend on the global group index only.
            n_chunks = min(n_groups, 4 * max(1, _effective_jobs(n_jobs)))
            bounds = np.linspace(0, n_groups, n_chunks + 1).astype(int)
            Xc = Xt.cpu()
            tasks = [
                delayed(_count_groups)(
                    forward,
                    Xc[b0 * noise_sharing : b1 * noise_sharing],
                    int(b0),
                    **kwargs,
                )
                for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)
                if b1 > b0
            ]
            parts = Parallel(n_jobs=n_jobs)(tasks)
            return MonteCarloCounts(np.concatenate(parts, axis=0), noise_key=root)
    finally:
        if was_training:
            forward.train()


def _in_parallel_config() -> bool:
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    name = type(backend).__name__
    return name not in ("SequentialBackend",) and _effective_jobs(None) != 1


def _effective_jobs(n_jobs: int | None) -> int:
    from joblib import effective_n_jobs

    try:
        return int(effective_n_jobs(n_jobs))
    except Exception:  # pragma: no cover - exotic backends
        return 1


def _progress(total: int, verbose: int, desc: str = "Monte Carlo") -> Any:
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="input", leave=False)


#: Monte Carlo jobs below this many forward passes are never timed nor announced
ANNOUNCE_MIN_PASSES = 200_000


def _probe_rate(forward: Any, X: Any, device: Any) -> float:
    """Noisy forward passes per second of ``forward`` on inputs like ``X[0]`` (one timed batch of
    up to 1,024 rows, after one warm-up batch)."""
    x0 = torch.as_tensor(np.asarray(X[:1], dtype=np.float32) if not isinstance(X, torch.Tensor)
                         else X[:1]).to(device=device, dtype=torch.float32)  # fmt: skip
    rows = x0.expand(1024, *x0.shape[1:]).contiguous()
    was_training = isinstance(forward, torch.nn.Module) and forward.training
    if isinstance(forward, torch.nn.Module):
        forward.eval()
    try:
        with torch.inference_mode():
            forward(rows + torch.randn_like(rows))
            t0 = time.perf_counter()
            forward(rows + torch.randn_like(rows))
            elapsed = time.perf_counter() - t0
    finally:
        if was_training:
            forward.train()
    return len(rows) / max(elapsed, 1e-9)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def announce_cost(
    forward: Any,
    X: Any,
    n_passes: int,
    *,
    what: str,
    verbose: int,
    shrink: str,
    device: Any = None,
    workers: int = 1,
) -> float | None:
    """Estimate a Monte Carlo job's time before it starts, and say it when it is long.

    From one timed batch of ``forward`` on this machine: prints the estimate
    at ``verbose >= 1`` when above a minute, and warns above an hour with the
    settings that shrink it (``shrink``). Jobs under
    :data:`ANNOUNCE_MIN_PASSES` forward passes are not timed.

    Returns
    -------
    seconds : float or None
        The estimate (``None`` when not timed).
    """
    if n_passes < ANNOUNCE_MIN_PASSES or len(X) == 0:
        return None
    if device is None:
        device = _module_device(forward) if isinstance(forward, torch.nn.Module) else "cpu"
    seconds = n_passes / _probe_rate(forward, X, device) / max(1, workers)
    text = (
        f"{what}: {n_passes:,} noisy forward passes, about {_duration(seconds)} at the rate "
        "measured here"
    )
    if verbose and seconds > 60:
        print(f"[rrise] {text}", flush=True)
    if seconds > 3600:
        warnings.warn(f"{text}. To shrink it: {shrink}.", UserWarning, stacklevel=3)
    return seconds


# ---------------------------------------------------------------------------
# resumable, scaled-out precomputation
# ---------------------------------------------------------------------------
_CACHE_FORMAT = 1
_CACHE_MANIFEST = "cache.json"


def _model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a module's class name, its printed structure and its state_dict.

    The class's import path is left out (the same network run as a script and
    imported from a package must match); the printed structure (``repr``)
    tells apart networks with the same weights but other layers, such as a
    ``torch.nn.Sequential`` with another activation.
    """
    h = hashlib.sha256(f"{type(model).__qualname__}|{model!r}".encode())
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"|{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def inputs_digest(X: np.ndarray) -> str:
    h = hashlib.sha256(f"{X.dtype}|{X.shape}|".encode())
    h.update(np.ascontiguousarray(X).tobytes())
    return h.hexdigest()


def _open_cache(cache_dir: str, fingerprint: dict) -> str:
    """Create or check the cache's manifest; return the fingerprint's digest."""
    import json
    import os

    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, _CACHE_MANIFEST)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                stored = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cache_dir {cache_dir} has an unreadable {_CACHE_MANIFEST} ({exc}); delete the "
                "folder or pass another cache_dir."
            ) from None
        if stored != fingerprint:
            keys = sorted(set(stored) | set(fingerprint))
            diff = [k for k in keys if stored.get(k) != fingerprint.get(k)]
            raise ValueError(
                f"cache_dir {cache_dir} holds counts of another computation (differs in: "
                f"{', '.join(diff)}); pass another cache_dir, or delete this one to start over."
            )
        return digest
    write_atomic(path, lambda fh: json.dump(fingerprint, fh, indent=1, sort_keys=True), text=True)
    return digest


def _read_chunk(path: str, digest: str, rows: int, n: int, n_classes: int) -> np.ndarray | None:
    """A finished chunk's counts, or None if it is missing, damaged or from elsewhere."""
    import os

    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            counts = z["counts"]
            ok = (
                str(z["fingerprint"]) == digest
                and str(z["sha256"]) == hashlib.sha256(counts.tobytes()).hexdigest()
                and counts.shape == (rows, n_classes)
                and bool(np.all(counts.sum(axis=1) == n))
            )
    except Exception:  # noqa: BLE001 - truncated or garbled: recompute
        return None
    return counts if ok else None


def _count_chunk(
    forward: Any, X: np.ndarray, first_group: int, kwargs: dict, threads: int, parent: int
) -> np.ndarray:
    """One chunk of whole noise groups; runs in a joblib worker (or in-process)."""
    import os

    if os.getpid() != parent and threads:
        torch.set_num_threads(int(threads))  # worker processes: no oversubscription
    if isinstance(forward, torch.nn.Module):
        forward.eval()
    Xt = torch.as_tensor(X).to(kwargs["device"])
    with torch.inference_mode():
        kw = dict(kwargs)
        if kw["batch_size"] == "auto":
            kw["batch_size"] = tuned_batch_size(forward, Xt, Xt.shape[0] * kw["n"])
        return _count_groups(forward, Xt, first_group, **kw)


def precompute_counts(
    model: Any,
    X: Any,
    *,
    sigma: float,
    n: int,
    n_classes: int,
    random_state: Any,
    noise_sharing: int = 1,
    cache_dir: str | None = None,
    chunk_size: int = 256,
    n_jobs: int | None = None,
    batch_size: int | str = "auto",
    device: Any = None,
    threads_per_worker: int | None = 1,
    verbose: int = 0,
    desc: str = "Monte Carlo",
) -> MonteCarloCounts:
    """Monte Carlo counts of many inputs in chunks: resumable, and scaled out with joblib.

    The same counts as :func:`monte_carlo_counts` with the same arguments
    (the noise is a function of the seed and each input's noise group only),
    computed in chunks of ``chunk_size`` inputs. With ``cache_dir``, each
    finished chunk is written there atomically (``.npz`` with a SHA-256 of its
    counts); after a crash the same call recomputes only the missing or
    damaged chunks. Chunks run through :class:`sklearn.utils.parallel.Parallel`:
    ``n_jobs`` uses local workers, and an enclosing
    ``joblib.parallel_config(backend="dask")`` with a live
    ``distributed.Client`` runs them on a Dask cluster. Only the model, the
    inputs of a chunk and the seed travel to a worker, never noise; results
    come back to this process, which alone writes the cache.

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier (logits or scores of shape ``(batch, n_classes)``).
    X : array-like of shape (n_inputs, ...)
        Inputs.
    sigma, n, n_classes, noise_sharing, batch_size, device :
        As in :func:`monte_carlo_counts`.
    random_state : int, SeedSequence or Generator
        The noise seed. Required with ``cache_dir``, and must be the same int
        on every run that shares the cache.
    cache_dir : str, optional
        Folder for finished chunks. It records a fingerprint of the
        computation (SHA-256 of the module's state_dict and of the inputs,
        sigma, n, n_classes, seed, noise_sharing, chunk size, device type); a
        folder written for anything else is refused with ``ValueError``.
    chunk_size : int, default=256
        Inputs per chunk (rounded down to whole noise groups, at least one).
        Part of the fingerprint: resume with the same value.
    n_jobs : int, optional
        Parallel chunks (``None``: 1 unless an enclosing joblib backend says
        otherwise). The counts do not depend on it, nor on the backend.
    threads_per_worker : int or None, default=1
        torch threads in each worker *process* (not in this process); keep
        ``threads x workers <= cores``. ``None`` leaves torch's default.
    verbose : int, default=0
        ``> 0`` shows a progress bar over chunks that says how many were
        found in the cache.
    desc : str, default="Monte Carlo"
        The bar's label.

    Returns
    -------
    counts : MonteCarloCounts of shape (n_inputs, n_classes)

    Raises
    ------
    ValueError
        For invalid arguments, for ``cache_dir`` without a fixed
        ``random_state``, or for a ``cache_dir`` written by another
        computation (the message names what differs).

    Examples
    --------
    >>> import tempfile
    >>> import torch
    >>> from rrise_sklearn.sampling import monte_carlo_counts, precompute_counts
    >>> f = torch.nn.Linear(2, 3)
    >>> X = torch.randn(10, 2)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     a = precompute_counts(f, X, sigma=0.5, n=200, n_classes=3, random_state=0,
    ...                           cache_dir=d, chunk_size=4)
    ...     b = precompute_counts(f, X, sigma=0.5, n=200, n_classes=3, random_state=0,
    ...                           cache_dir=d, chunk_size=4)  # read back from the cache
    >>> c = monte_carlo_counts(f, X, sigma=0.5, n=200, n_classes=3, random_state=0,
    ...                        noise_sharing=1)
    >>> bool((a == b).all() and (a == c).all())
    True
    """
    import os

    from joblib import effective_n_jobs

    if cache_dir is not None and random_state is None:
        raise ValueError(
            "cache_dir needs a fixed random_state (e.g. random_state=0): a rerun must draw the "
            "same noise to reuse finished chunks."
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    sigma, n, n_classes, noise_sharing = _check_engine_args(
        sigma, n, n_classes, noise_sharing, batch_size
    )
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be an integer >= 1; got chunk_size={chunk_size!r}.")
    Xn = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if Xn.ndim < 2:
        raise ValueError(f"X must have shape (n_inputs, ...); got shape {Xn.shape}.")
    Xn = np.ascontiguousarray(Xn, dtype=np.float32)
    if not np.isfinite(Xn).all():
        raise ValueError("X contains NaN or infinity; clean or impute the inputs first.")
    dev = torch.device(device) if device is not None else _module_device(model)
    root = resolve_seed(random_state)
    n_inputs = len(Xn)
    if n_inputs == 0:
        return MonteCarloCounts(np.zeros((0, n_classes), dtype=np.int64), noise_key=root)
    groups_per_chunk = max(1, int(chunk_size) // noise_sharing)
    n_groups = -(-n_inputs // noise_sharing)
    starts = list(range(0, n_groups, groups_per_chunk))
    spans = [
        (g0 * noise_sharing, min(n_inputs, (g0 + groups_per_chunk) * noise_sharing))
        for g0 in starts
    ]

    digest = None
    if cache_dir is not None:
        fingerprint = {
            "format": _CACHE_FORMAT,
            "model": _model_digest(model),
            "inputs": inputs_digest(Xn),
            "sigma": sigma,
            "n": n,
            "n_classes": n_classes,
            "seed": str(root),
            "noise_sharing": noise_sharing,
            "chunk_inputs": groups_per_chunk * noise_sharing,
            "device_type": dev.type,
        }
        digest = _open_cache(os.fspath(cache_dir), fingerprint)

    def chunk_path(i: int) -> str:
        return os.path.join(os.fspath(cache_dir), f"chunk_{i:06d}.npz")

    parts: list[np.ndarray | None] = [None] * len(starts)
    if digest is not None:
        for i, (a, b) in enumerate(spans):
            parts[i] = _read_chunk(chunk_path(i), digest, b - a, n, n_classes)
    todo = [i for i, p in enumerate(parts) if p is None]
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        cached = len(starts) - len(todo)
        bar = tqdm(
            total=len(starts),
            initial=cached,
            desc=f"{desc} ({cached} of {len(starts)} chunks cached)",
            unit="chunk",
        )
    kwargs = dict(
        sigma=sigma,
        n=n,
        n_classes=n_classes,
        batch_size=batch_size,
        root=root,
        noise_sharing=noise_sharing,
        device=dev,
    )
    parent = os.getpid()
    was_training = model.training

    def finish(i: int, counts: np.ndarray) -> None:
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        if digest is not None:
            arrays = dict(
                counts=counts,
                sha256=np.array(hashlib.sha256(counts.tobytes()).hexdigest()),
                fingerprint=np.array(digest),
                index=np.array(i),
            )
            # no fsync: every chunk carries its checksum, a torn one is recomputed
            write_atomic(chunk_path(i), lambda fh: np.savez(fh, **arrays), fsync=False)
        parts[i] = counts
        if bar is not None:
            bar.update(1)

    try:
        workers = 1 if n_jobs is None and not _in_parallel_config() else effective_n_jobs(n_jobs)
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                a, b = spans[i]
                finish(i, _count_chunk(model, Xn[a:b], starts[i], kwargs, 0, parent))
        else:
            tasks = [
                delayed(_count_chunk)(
                    model,
                    Xn[spans[i][0] : spans[i][1]],
                    starts[i],
                    kwargs,
                    threads_per_worker or 0,
                    parent,
                )
                for i in todo
            ]
            results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
            for i, counts in zip(todo, results, strict=True):
                finish(i, counts)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return MonteCarloCounts(np.concatenate(parts, axis=0), noise_key=root)

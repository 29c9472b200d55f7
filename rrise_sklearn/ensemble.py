"""Ensembles of surrogate networks, and what ties a calibration to a network's weights.

:class:`MeanLogProbEnsemble` averages its members' log-probabilities (one batched
pass for MLP members). :func:`state_digest` and :class:`WeightWatch` let a
calibrated surrogate notice that its network changed since the calibration.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch

from ._validation import flat_rows

__all__ = ["MeanLogProbEnsemble", "WeightWatch", "fit_members", "fit_stacked", "state_digest"]


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and values).

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.ensemble import state_digest
    >>> net = torch.nn.Linear(3, 2)
    >>> before = state_digest(net)
    >>> with torch.no_grad():
    ...     net.bias[0] += 1.0
    >>> state_digest(net) == before
    False
    """
    h = hashlib.sha256()
    for name, t in module.state_dict(keep_vars=False).items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            b = t.cpu().contiguous()
            if b.dtype == torch.bfloat16:
                b = b.view(torch.int16)
            h.update(b.numpy().tobytes())
    return h.hexdigest()


class WeightWatch:
    """Says cheaply whether a module's weights may have changed since it was made.

    Remembers every parameter and buffer with its version counter (bumped by
    in-place updates: optimizer steps, ``load_state_dict``, ``add_``) and its
    storage (``.data =`` assignment swaps it; the old storage is held so that its
    address cannot be reused). A replaced module, layer or tensor shows as a
    different object. ``False`` means "look closer" (compare digests), not
    "changed".
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.entry = module.__dict__.get("fused_entry")
        tensors = _tensors(module)
        self.key = _tensor_key(tensors)
        # held so that no id or storage address in the key can be reused while it lives
        self.alive = (tensors, [t.untyped_storage() for t in tensors])

    def unchanged(self, module: torch.nn.Module, after_forward: bool = False) -> bool:
        """``after_forward``: right after a forward pass of ``module`` in the same call, an
        ensemble's fused pass has revalidated its cache against every weight; the same
        cache entry as when this watch was made then means the same weights (cheap)."""
        if module is not self.module:
            return False
        if after_forward and self.entry is not None:
            if module.__dict__.get("fused_entry") is self.entry:
                return True
        return _tensor_key(_tensors(module)) == self.key


def _tensors(module: torch.nn.Module) -> list:
    """Every parameter and buffer, through the plain dicts (far cheaper than parameters())."""
    out = []
    stack = [module]
    while stack:
        m = stack.pop()
        out.extend(t for t in m._parameters.values() if t is not None)
        out.extend(t for t in m._buffers.values() if t is not None)
        stack.extend(m._modules.values())
    return out


def _tensor_key(tensors: list) -> list:
    return [(id(t), t._version, t.data_ptr()) for t in tensors]


class MeanLogProbEnsemble(torch.nn.Module):
    """Several surrogate networks as one: the mean of their log-softmax outputs.

    Its output, read as logits, gives the normalized geometric mean of the
    members' class probabilities. Used by ``RRISESurrogate(n_members=k)``.

    Examples
    --------
    >>> import torch
    >>> from rrise_sklearn.ensemble import MeanLogProbEnsemble
    >>> ens = MeanLogProbEnsemble([torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)])
    >>> tuple(ens(torch.zeros(4, 3)).shape)
    (4, 2)
    """

    #: inputs up to this many rows take the fused path (larger batches are
    #: already dominated by arithmetic, where one GEMM per member is faster here)
    fused_max_rows = 64

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self._stacked: tuple | None = None

    def __getstate__(self) -> dict:
        # the fused cache holds object identities and storages: rebuilt after a copy
        state = dict(super().__getstate__())
        state["_stacked"] = None
        state.pop("fused_entry", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled() and len(x) <= self.fused_max_rows:
            layers = self._stacked_layers()
            if layers is not None:
                # the cache entry this pass used, just validated against every weight
                # (WeightWatch reads it: an unchanged entry means unchanged weights)
                self.__dict__["fused_entry"] = self._stacked
                return _fused_mean_log_softmax(layers, x)
        self.__dict__["fused_entry"] = None
        return torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members]).mean(dim=0)

    def _stacked_layers(self) -> list | None:
        """The members' dense layers stacked into ``(k, in, out)`` weights, if all are MLPs.

        One batched matrix product per layer serves every member, so a
        single query costs about one network's Python and kernel overhead
        instead of ``k``. Rebuilt whenever a weight changes (tracked by the
        tensors' version counters); ``None`` for other architectures, which
        take the loop.
        """
        signature = _layer_ids(self.members)
        if self._stacked is not None and self._stacked[0] == signature:
            # same members, same layer objects: reuse unless a weight tensor was replaced
            # or changed in place (version counters)
            _, linears, key, layers, _ = self._stacked
            try:
                if _weights_key(linears) == key:
                    return layers
            except (AttributeError, KeyError):  # a bias removed: rebuild (and refuse) below
                pass
        specs = [_dense_layers(m) for m in self.members]
        if any(s is None for s in specs) or len({tuple(map(len, s)) for s in specs}) != 1:
            return None
        shapes = {tuple((w.shape, b.shape, act) for w, b, act in s) for s in specs}
        if len(shapes) != 1:
            return None
        with torch.no_grad():
            layers = [
                (
                    torch.stack([s[i][0].t() for s in specs]).contiguous(),
                    torch.stack([s[i][1] for s in specs])[:, None, :].contiguous(),
                    specs[0][i][2],
                )
                for i in range(len(specs[0]))
            ]
        linears = [m for k in self.members for m in k.net if isinstance(m, torch.nn.Linear)]
        # strong references to every object whose id is in the keys, so that no id can be
        # reused by a new layer or tensor while this cache entry lives
        alive = (
            list(self.members),
            [list(k.net) for k in self.members],
            [(m.weight, m.bias) for m in linears],
            # the storages too: no data_ptr in the key can be reused after `.data =`
            [(m.weight.untyped_storage(), m.bias.untyped_storage()) for m in linears],
        )
        self._stacked = (signature, linears, _weights_key(linears), layers, alive)
        return layers


def _dense_layers(module: torch.nn.Module) -> list | None:
    """``[(weight, bias, relu_after), ...]`` of an MLP-shaped module, else None."""
    from .nets import MLP

    seq = module.net if isinstance(module, MLP) else None
    if seq is None:
        return None
    out: list = []
    for layer in seq:
        if isinstance(layer, torch.nn.Linear) and layer.bias is not None:
            out.append([layer.weight, layer.bias, False])
        elif isinstance(layer, torch.nn.ReLU) and out:
            out[-1][2] = True
        elif not isinstance(layer, torch.nn.Dropout):  # dropout is the identity in eval mode
            return None
    return [tuple(x) for x in out]


def _layer_ids(members: Any) -> tuple:
    """Ids of the members and of their MLP layers: changes when any of them is replaced."""
    from .nets import MLP

    # through ``_modules`` (plain dicts): ``m.net`` would go through Module.__getattr__
    return tuple(
        (id(m), *map(id, m._modules["net"]._modules.values())) if isinstance(m, MLP) else (id(m),)
        for m in members
    )


def _weights_key(linears: list) -> tuple:
    """Identity and version counter of every weight and bias of ``linears``."""
    params = (m._parameters for m in linears)  # a plain dict: faster than m.weight, m.bias
    return tuple(
        (id(w), w._version, w.data_ptr(), id(b), b._version, b.data_ptr())
        for w, b in ((p["weight"], p["bias"]) for p in params)
    )


def _fused_mean_log_softmax(layers: list, x: torch.Tensor) -> torch.Tensor:
    k = layers[0][0].shape[0]
    h = x.reshape(1, x.shape[0], -1).expand(k, -1, -1)
    for w, b, relu in layers:
        h = torch.baddbmm(b, h, w)
        if relu:
            h = torch.relu(h)
    return torch.log_softmax(h, dim=2).mean(dim=0)


#: optimizers whose update of a weight depends only on that weight's own gradients
#: (so members trained together as one batched network get the updates they would alone)
_ELEMENTWISE_OPTIMIZERS = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.SGD,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)


def _progress_only(callbacks: Any) -> list | None:
    """The EpochProgress bars among ``callbacks`` if they are all there is, else None."""
    from .callbacks import EpochProgress

    found = []
    for cb in callbacks or []:
        cb = cb[1] if isinstance(cb, tuple) else cb
        if not isinstance(cb, EpochProgress):
            return None
        found.append(cb)
    return found


def _epoch_bar(desc: str, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def fit_stacked(
    net: Any, X_tr: np.ndarray, targets: np.ndarray, seeds: Any, fit_params: dict
) -> list[torch.nn.Module] | None:
    """Train every member at once as one batched network; ``None`` where that would differ.

    Each member keeps what it has in the loop of skorch fits: its
    initialization (seeded the same way), its own shuffled order in every
    epoch, its own optimizer state. The loss is the sum of the members'
    mean losses, so with an element-wise optimizer each member's update is
    the one it would get alone; what changes is the cost, one batched
    matrix product per layer for all members instead of one skorch step
    per member. Taken for MLP members without dropout under the default
    training loop (element-wise optimizer, no callbacks but
    :class:`~rrise_sklearn.callbacks.EpochProgress` bars, no validation
    split, no fit parameters); anything else takes the loop. With
    ``verbose > 0`` it prints one line per epoch: the members' mean
    training loss and the epoch's seconds. ``net`` is the surrogate (a skorch
    net): its parameters, initialization and criterion are used.
    """
    it_kw = net.get_params_for("iterator_train")
    progress = _progress_only(net.callbacks)
    if (
        len(seeds) < 2
        or fit_params
        or net.warm_start
        or net.train_split is not None
        or progress is None
        or net.optimizer not in _ELEMENTWISE_OPTIMIZERS
        or "param_groups" in net.get_params_for("optimizer")
        or net.iterator_train is not torch.utils.data.DataLoader
        or it_kw not in ({"shuffle": True}, {"shuffle": True, "batch_size": net.batch_size})
    ):
        return None
    inits = []
    verbose, net.verbose = net.verbose, 0  # no "Re-initializing ..." line per member
    try:
        for seed in seeds:
            torch.manual_seed(int(seed))
            net.initialize()
            layers = _dense_layers(net.module_)
            if layers is None or any(
                isinstance(m, torch.nn.Dropout) and m.p > 0 for m in net.module_.modules()
            ):
                return None
            inits.append((net.module_, layers))
    finally:
        net.verbose = verbose
    device = torch.device(net.device)
    with torch.no_grad():
        params = [
            torch.nn.Parameter(torch.stack([p[i][w].detach() for _, p in inits]).to(device))
            for i in range(len(inits[0][1]))
            for w in (0, 1)
        ]
    relu = [layer[2] for layer in inits[0][1]]
    named = [
        (f"layer{i // 2}.{'weight' if i % 2 == 0 else 'bias'}", p) for i, p in enumerate(params)
    ]
    args, kwargs = net.get_params_for_optimizer("optimizer", named)
    optimizer = net.optimizer(*args, **kwargs)
    criterion = net.criterion_
    criterion.train()
    X = torch.as_tensor(flat_rows(X_tr), device=device)
    T = torch.as_tensor(targets, device=device)
    k, N = len(seeds), len(X)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    bs = int(net.batch_size) if net.batch_size != -1 else N
    bars = [_epoch_bar(cb.desc, int(net.max_epochs)) for cb in progress]
    if net.verbose:
        print(f"training {k} members as one batched network ({N} rows, batch {bs})")
        print(f"{'epoch':>7}  {'train_loss':>12}  {'dur':>7}\n{'-' * 7}  {'-' * 12}  {'-' * 7}")
    for epoch in range(int(net.max_epochs)):
        t_epoch = time.perf_counter()
        total = 0.0
        order = torch.stack([torch.randperm(N, generator=g) for g in gens]).to(device)
        for i in range(0, N, bs):
            idx = order[:, i : i + bs]
            h = X[idx]  # (k, b, d): member j's own batch
            for li in range(len(relu)):
                w, b = params[2 * li], params[2 * li + 1]
                # Linear weights are (out, in): h @ w^T + b, for every member at once
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                if relu[li]:
                    h = torch.relu(h)
            loss = k * criterion(h.reshape(-1, h.shape[-1]), T[idx].reshape(-1, T.shape[1]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.shape[1]
        for bar in bars:
            bar.update(1)
            bar.set_postfix(loss=f"{total / (k * N):.4f}")  # members' mean train loss
        if net.verbose:
            dur = time.perf_counter() - t_epoch
            print(f"{epoch + 1:>7}  {total / (k * N):>12.4f}  {dur:>7.4f}", flush=True)
    for bar in bars:
        bar.close()
    members = []
    with torch.no_grad():
        for j, (module, layers) in enumerate(inits):
            for li, (w, b, _) in enumerate(layers):
                w.copy_(params[2 * li][j])
                b.copy_(params[2 * li + 1][j])
            members.append(module)
    return members


def fit_members(
    net: Any,
    X_tr: np.ndarray,
    targets: np.ndarray,
    seeds: Any,
    fit_params: dict,
    train: Any = None,
) -> torch.nn.Module:
    """Train one network per seed: batched (:func:`fit_stacked`) or one skorch fit each.

    ``train(X, y, **fit_params)`` is one skorch fit of ``net`` (default its
    ``partial_fit``). Returns the trained network, a :class:`MeanLogProbEnsemble`
    for several seeds. The global torch random state is left as it was.
    """
    train = net.partial_fit if train is None else train
    devices = [net.device] if str(net.device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        members = fit_stacked(net, X_tr, targets, seeds, fit_params)
        for j, seed in enumerate(seeds if members is None else []):
            # one skorch fit per member; member 0 = the single-network fit
            members = members or []
            torch.manual_seed(int(seed))
            if j > 0 or not net.warm_start or not getattr(net, "initialized_", False):
                net.initialize()
            train(X_tr, targets, **fit_params)
            members.append(net.module_)
    if len(members) > 1:
        return MeanLogProbEnsemble(members).to(net.device)
    return members[0]

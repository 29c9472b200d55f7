"""skorch callbacks."""

from __future__ import annotations

from typing import Any

from skorch.callbacks import Callback, PrintLog

__all__ = ["EpochLog", "EpochProgress"]


class EpochProgress(Callback):
    """A tqdm progress bar over training epochs (quieter than skorch's epoch log).

    Examples
    --------
    >>> from rrise_sklearn.callbacks import EpochProgress
    >>> EpochProgress("training").desc
    'training'
    """

    def __init__(self, desc: str = "training") -> None:
        self.desc = desc

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar_ = tqdm(total=net.max_epochs, desc=self.desc, unit="epoch", leave=False)

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        self.bar_.update(1)
        loss = net.history[-1].get("train_loss")
        if loss is not None:
            self.bar_.set_postfix(loss=f"{loss:.4f}")

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        self.bar_.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("bar_", None)  # tqdm bars do not pickle
        return state


class EpochLog(PrintLog):
    """skorch's epoch table, printed only at ``verbose >= 2``.

    The estimators' ``verbose=1`` shows their Monte Carlo progress bars and
    cost estimates; the per-epoch table is one level up.
    """

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if int(getattr(net, "verbose", 0) or 0) >= 2:
            super().on_epoch_end(net, **kwargs)

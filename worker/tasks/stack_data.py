"""Each stack member's own data: its seed's split and its seed's minibatch order.

A member trains on what its lone run would: the split ``load_split`` draws from its seed
(``derived_seed(seed, "split")``; MNIST has one split for all) and a permutation per epoch
from its own generator (``derived_seed(seed, "order")``). Splits are held once each on the
device, however many members share one, and a minibatch is gathered for all members at
once: (K, batch, features), member k's rows from its own split in its own order.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

import torch
from torch import Tensor

from search_spaces import DeepMLPConfig, derived_seed
from worker.data import Split
from worker.tasks.deep_mlp import load_split

__all__ = ["MemberData", "split_key"]


def split_key(cfg: DeepMLPConfig) -> Hashable:
    """Configs with equal keys train on the same split."""
    if cfg.dataset == "mnist":
        return ("mnist", cfg.data_dir)
    return ("digits", cfg.val_fraction, derived_seed(cfg.seed, "split"))


class MemberData:
    """The splits and data orders of a stack's members, row k for member k."""

    def __init__(self, cfgs: list[DeepMLPConfig], device: torch.device) -> None:
        index: dict[Hashable, int] = {}
        splits: list[Split] = []
        rows = []
        for cfg in cfgs:
            key = split_key(cfg)
            if key not in index:
                index[key] = len(splits)
                splits.append(load_split(cfg))
            rows.append(index[key])

        def stacked(name: str) -> Tensor:
            return torch.stack([torch.as_tensor(getattr(s, name)) for s in splits]).to(device)

        # (splits, n, features) and (splits, n); equal sizes, as val_fraction is shared.
        self.x_train, self.y_train = stacked("x_train"), stacked("y_train")
        self.x_val, self.y_val = stacked("x_val"), stacked("y_val")
        self.split_of = torch.tensor(rows, dtype=torch.int64, device=device)
        self.order_gens = [
            torch.Generator().manual_seed(derived_seed(c.seed, "order")) for c in cfgs
        ]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[2]

    def minibatches(self, batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of minibatches, (K, batch, features) and (K, batch), the last maybe
        smaller; each member draws its epoch's permutation as its lone run does."""
        device = self.x_train.device
        perms = torch.stack([torch.randperm(self.n_train, generator=g) for g in self.order_gens])
        perms = perms.to(device)
        rows = self.split_of[:, None]
        for start in range(0, self.n_train, batch):
            # Gathered per minibatch: a whole epoch for every member could be K copies of
            # the training set (MNIST: 188 MB each).
            taken = perms[:, start : start + batch]
            yield self.x_train[rows, taken], self.y_train[rows, taken]

    def validation(self) -> tuple[Tensor, Tensor]:
        """Each member's validation set, (K, n, features) and (K, n); one shared split is
        expanded, not copied."""
        k = len(self.order_gens)
        if len(self.x_val) == 1:
            return self.x_val.expand(k, *self.x_val.shape[1:]), self.y_val.expand(k, -1)
        return self.x_val[self.split_of], self.y_val[self.split_of]

    def keep(self, rows: list[int]) -> None:
        """Keep only the members in `rows`, in that order."""
        self.split_of = self.split_of[torch.tensor(rows, device=self.split_of.device)]
        self.order_gens = [self.order_gens[r] for r in rows]

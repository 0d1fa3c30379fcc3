"""Do the DDP replicas still agree? A cheap checksum of the optimizer state, compared by all-reduce.

Under DDP every rank applies the same averaged gradient, so parameters and optimizer state
should be bit-identical on every rank; a difference means a rank diverged (a non-deterministic
kernel, a buffer updated on one rank only, a broken resume). Comparing whole tensors would cost
a full all-gather; per-tensor float64 sums are a vector of a few numbers per parameter, and one
all-reduce of MAX over (sums, -sums) gives each entry's max and min across the ranks at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

AllReduceMax = Callable[[Tensor], Tensor]


def state_checksums(optimizer: torch.optim.Optimizer) -> Tensor:
    """float64 sums of every parameter and every state tensor/number, in a fixed order.

    Every rank builds the same layout (same parameters, same state keys), which the
    all-reduce needs; the sums are summed in float64 without copying the tensors.
    """
    sums: list[Tensor] = []
    dev = None
    for group in optimizer.param_groups:
        for p in group["params"]:
            dev = dev or p.device
            sums.append(p.detach().sum(dtype=torch.float64))
            state = optimizer.state.get(p, {})
            for key in sorted(state):
                value = state[key]
                if isinstance(value, Tensor):
                    sums.append(value.detach().sum(dtype=torch.float64))
                elif isinstance(value, int | float):
                    sums.append(torch.tensor(float(value), dtype=torch.float64))
    if not sums:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([s.to(dev) for s in sums])


def replica_spread(checksums: Tensor, all_reduce_max: AllReduceMax) -> Tensor:
    """max over entries of |max - min| across ranks, a 0-d tensor (0 when replicas agree).

    ``all_reduce_max`` is the element-wise MAX all-reduce of a 1-d tensor (identity with one
    process); MAX of -x is -min(x), so one collective gives both extremes.
    """
    n = checksums.numel()
    if n == 0:
        return torch.zeros((), dtype=torch.float64, device=checksums.device)
    both = all_reduce_max(torch.cat([checksums, -checksums]))
    return (both[:n] + both[n:]).abs().max()  # NaN when a checksum is NaN: no comparison

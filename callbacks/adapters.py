"""What the diagnostics need from an optimizer and from a logger.

Every ``lit_amsgrad.optim`` optimizer answers ``inverse_lr(p)`` and ``second_moment(p)`` itself;
``torch.optim.Adam`` and ``AdamW`` get an adapter that derives the same from their state, so the
callback has one code path for both. Loggers: ``log_histograms`` sends the effective-step
histograms to W&B and TensorBoard, each in its own format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor

from lit_amsgrad.optim.core import MomentsProgram


@runtime_checkable
class MomentView(Protocol):
    """The two questions the diagnostics ask about the last step of one parameter."""

    def inverse_lr(self, p: Tensor) -> Tensor:
        """(sqrt(vhat_t) + eps) / alpha_t of the last step, element-wise, as a new tensor."""
        ...

    def second_moment(self, p: Tensor) -> tuple[Tensor, Tensor | None]:
        """(v_t, vhat_t) in one scale; vhat_t is None without a running max."""
        ...


class TorchAdamAdapter:
    """``MomentView`` of ``torch.optim.Adam`` / ``AdamW`` (any ``amsgrad``, foreach or fused).

    torch updates p -= (lr / bc1) * m / (sqrt(v or vmax) / sqrt(bc2) + eps) with
    bc_i = 1 - beta_i^step, so inverse_lr = (sqrt(v or vmax) / sqrt(bc2) + eps) * bc1 / lr.
    torch takes the running max over the *raw* v, so ``second_moment`` returns raw v and vmax.
    """

    def __init__(self, optimizer: torch.optim.Adam) -> None:
        self.optimizer = optimizer
        self._groups: dict[int, dict] = {}

    def _group(self, p: Tensor) -> dict:
        group = self._groups.get(id(p))
        if group is None:  # first call, or a param group added since
            self._groups = {id(q): g for g in self.optimizer.param_groups for q in g["params"]}
            group = self._groups[id(p)]
        return group

    def inverse_lr(self, p: Tensor) -> Tensor:
        group, state = self._group(p), self.optimizer.state[p]
        beta1, beta2 = group["betas"]
        step = state["step"]
        if isinstance(step, Tensor) and step.device.type == "cpu":
            step = step.item()  # a host scalar: no device sync, float64 like torch's own loop
        bc1, bc2 = 1 - beta1**step, 1 - beta2**step
        bc2_sqrt = math.sqrt(bc2) if isinstance(bc2, float) else bc2.sqrt()
        v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
        return (v.sqrt() / bc2_sqrt + group["eps"]) * (bc1 / group["lr"])

    def second_moment(self, p: Tensor) -> tuple[Tensor, Tensor | None]:
        state = self.optimizer.state[p]
        return state["exp_avg_sq"], state["max_exp_avg_sq"] if self._group(p)["amsgrad"] else None


def moments_of(
    view: MomentView, params: list[Tensor]
) -> tuple[list[Tensor], list[tuple[Tensor, Tensor | None]]]:
    """``inverse_lr`` and ``second_moment`` of every parameter; a view that also answers
    ``moments(params)`` (every ``lit_amsgrad.optim`` optimizer) answers for all at once."""
    batched = getattr(view, "moments", None)
    if callable(batched):
        return batched(params)
    return [view.inverse_lr(p) for p in params], [view.second_moment(p) for p in params]


def moments_program_of(view: MomentView, params: list[Tensor]) -> MomentsProgram | None:
    """The view's ``moments_program(params)`` when it has one (every ``lit_amsgrad.optim``
    optimizer: the compiled logging step then computes the moments itself), else None."""
    program = getattr(view, "moments_program", None)
    return program(params) if callable(program) else None


def moment_view(optimizer: torch.optim.Optimizer) -> MomentView | None:
    """The optimizer itself if it answers both questions, an adapter for torch Adam(W), else None."""
    if callable(getattr(optimizer, "inverse_lr", None)) and callable(
        getattr(optimizer, "second_moment", None)
    ):
        return optimizer  # type: ignore[return-value]
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return TorchAdamAdapter(optimizer)
    return None


# ---------------------------------------------------------------- loggers
# What the diagnostics need from a logger beyond ``log_metrics``: a way to take the
# effective-step histograms. W&B gets ``wandb.Histogram``s, TensorBoard ``add_histogram_raw``;
# every other logger gets the scalars only.


def histogram_loggers(loggers: Sequence[Logger]) -> list[Logger]:
    """The loggers that take histograms: W&B and TensorBoard."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    return [lg for lg in loggers if isinstance(lg, WandbLogger | TensorBoardLogger)]


def log_histograms(
    loggers: Sequence[Logger], hists: Mapping[str, tuple[np.ndarray, np.ndarray]], step: int
) -> None:
    """``{key: (counts, edges)}`` (edges in log10 of the effective step) to every logger of
    ``histogram_loggers``, at ``step``."""
    from lightning.pytorch.loggers import WandbLogger

    payload = None
    for logger in histogram_loggers(loggers):
        if isinstance(logger, WandbLogger):
            import wandb

            if payload is None:
                payload = {
                    key: wandb.Histogram(np_histogram=(counts.astype(np.int64), edges))
                    for key, (counts, edges) in hists.items()
                }
            logger.log_metrics(payload, step=step)
        else:
            writer = logger.experiment
            for key, (counts, edges) in hists.items():
                counts = np.asarray(counts, dtype=np.float64)
                edges = np.asarray(edges, dtype=np.float64)
                centers = (edges[:-1] + edges[1:]) / 2
                writer.add_histogram_raw(
                    key, min=float(edges[0]), max=float(edges[-1]), num=int(counts.sum()),
                    sum=float((counts * centers).sum()),
                    sum_squares=float((counts * centers**2).sum()),
                    bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                    global_step=step,
                )  # fmt: skip

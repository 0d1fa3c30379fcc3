"""The paper's Figure 1 problems as a LightningModule: online convex optimisation on [-1, 1].

Online:     f_t(x) = big * x if t mod period == 1, else small * x   (1010, -10, 101)
Stochastic: f_t(x) = big * x with probability spike_prob, else small * x   (0.01)
            with ``batch_size`` B > 1 each round's gradient is the mean of B such draws
            (mini-batch Adam); under DDP every process draws its own B and the processes'
            gradients are averaged, as DDP averages a model's gradients (global batch N * B)

The optimum is x = -1 (the spikes win on average by a little). Lightning's per-step
overhead is large against a 1-D problem, so one training step plays a whole batch of
rounds (see ``SyntheticConvexDataModule``), each of them a real ``optimizer.step()`` that
callbacks and optimizer hooks see. Several independent runs ("seeds") can share one
parameter vector: the optimizers act coordinate-wise, so coordinate i is run i.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from lit_amsgrad.errors import ConfigError
from lit_amsgrad.optim import AMSGrad

PROBLEMS = ("online", "stochastic")
DOMAIN = (-1.0, 1.0)


def check_problem(problem: str) -> None:
    if problem not in PROBLEMS:
        raise ConfigError(f"problem must be one of {list(PROBLEMS)}, got {problem!r}")


def loss_coefficients(
    problem: str,
    rounds: Tensor,
    num_seeds: int,
    *,
    seed: int = 0,
    big: float = 1010.0,
    small: float = -10.0,
    period: int = 101,
    spike_prob: float = 0.01,
    batch_size: int = 1,
    rank: int = 0,
) -> Tensor:
    """c_t for the given rounds t (1-based), shape [len(rounds), num_seeds]: f_t(x) = c_t x.

    The stochastic draws depend only on (seed, rank, first round of the batch), so a resumed
    or repeated run sees the same functions and every DDP process draws its own samples.
    ``batch_size`` B > 1: c_t is the mean of B draws, sampled exactly as a spike count
    k ~ Binomial(B, spike_prob), so the cost of a round does not grow with B.
    """
    rounds = rounds.reshape(-1, 1)
    if problem == "online":
        spike = (rounds % period == 1).expand(-1, num_seeds)
    elif problem == "stochastic":
        start = seed * 1_000_003 + int(rounds[0, 0])
        if rank > 0:  # torch's CPU generator keeps 32 bits of a seed: mix the rank into them
            start = (start ^ (rank * 0x9E3779B1)) & 0xFFFFFFFF
        generator = torch.Generator().manual_seed(start)
        shape = (rounds.shape[0], num_seeds)
        if batch_size > 1:
            count = torch.full(shape, float(batch_size))
            spikes = torch.binomial(count, torch.full(shape, spike_prob), generator=generator)
            return ((spikes * big + (batch_size - spikes) * small) / batch_size).float()
        spike = torch.rand(shape, generator=generator) < spike_prob
    else:
        check_problem(problem)
    return torch.where(spike, big, small).to(torch.float32)


def mean_coefficient(
    problem: str, *, big: float, small: float, period: int, spike_prob: float
) -> float:
    """mu in the expected loss F(x) = mu x: the mean over one period (online) or E[c_t]."""
    if problem == "online":
        return (big + (period - 1) * small) / period
    return spike_prob * big + (1 - spike_prob) * small


class SyntheticConvexModule(LightningModule):
    """Plays the online game of the paper's Figure 1 and logs ``x`` and ``avg_regret``.

    ``x`` is the iterate (the mean over seeds), ``avg_regret`` is R_t / t with
    R_t = sum_s f_s(x_s) - min_{x in [-1, 1]} sum_s f_s(x), averaged over seeds, and
    ``expected_avg_regret`` is (1/t) sum_s F(x_s) - min F with the expected loss
    F(x) = mu x (``mean_coefficient``): free of the sampling noise of f_t, which with a
    mini-batch changes the losses themselves, so runs with different B compare on it.
    """

    def __init__(
        self,
        problem: str = "online",
        optimizer: OptimizerCallable = lambda params: AMSGrad(params, lr=0.5),
        num_seeds: int = 1,
        x0: float = 0.0,
        seed: int = 0,
        big: float = 1010.0,
        small: float = -10.0,
        period: int = 101,
        spike_prob: float = 0.01,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        check_problem(problem)
        if num_seeds < 1:
            raise ConfigError(f"num_seeds must be >= 1, got {num_seeds}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > 1 and problem != "stochastic":
            raise ConfigError("batch_size > 1 needs problem: stochastic (online rounds are fixed)")
        if not DOMAIN[0] <= x0 <= DOMAIN[1]:
            raise ConfigError(f"x0 must be in [{DOMAIN[0]}, {DOMAIN[1]}], got {x0}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.automatic_optimization = False
        self.x = torch.nn.Parameter(torch.full((num_seeds,), float(x0)))
        self.register_buffer("cumulative_loss", torch.zeros(num_seeds, dtype=torch.float64))
        self.register_buffer("cumulative_coef", torch.zeros(num_seeds, dtype=torch.float64))
        self.register_buffer("rounds_played", torch.zeros((), dtype=torch.long))
        self.register_buffer("cumulative_x", torch.zeros(num_seeds, dtype=torch.float64))
        #: (round, mean x, mean average regret) after every training step, for plots
        self.history: list[tuple[int, float, float]] = []
        #: (round, mean expected average regret) after every training step
        self.expected_history: list[tuple[int, float]] = []

    def expected_coefficient(self) -> float:
        """mu, the expected loss being mu * x: its minimiser on [-1, 1] is -sign(mu)."""
        hp = self.hparams
        return mean_coefficient(
            hp.problem, big=hp.big, small=hp.small, period=hp.period, spike_prob=hp.spike_prob
        )

    def result_line(self, trainer: Any) -> str:
        """The last line of a fit (``lit_amsgrad.fit_summary``): where x ended against the
        optimum, so that a first user can tell a success from the paper's failure mode."""
        optimum = -1.0 if self.expected_coefficient() > 0 else 1.0
        x = float(self.x.detach().mean())
        where = (
            "at the optimum"
            if abs(x - optimum) < 0.05
            else "on the wrong side: the failure the paper proves for Adam"
            if x * optimum < 0
            else "between the start and the optimum"
        )
        regret = trainer.callback_metrics.get("avg_regret")
        regret_text = f", average regret {float(regret):.4g}" if regret is not None else ""
        return (
            f"result: x = {x:+.3f} after {int(self.rounds_played):,} rounds; the optimum is "
            f"x = {optimum:+.0f} ({where}){regret_text}"
        )

    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(self.parameters())

    def coefficients(self, rounds: Tensor) -> Tensor:
        hp = self.hparams
        trainer = self._trainer
        world_size = trainer.world_size if trainer is not None else 1
        coefs = loss_coefficients(
            hp.problem, rounds.cpu(), hp.num_seeds, seed=hp.seed, big=hp.big,
            small=hp.small, period=hp.period, spike_prob=hp.spike_prob,
            batch_size=hp.batch_size, rank=trainer.global_rank if world_size > 1 else 0,
        ).to(self.device)  # fmt: skip
        if world_size > 1:  # each process's gradients from its own draws, averaged as DDP does
            coefs = trainer.strategy.reduce(coefs, reduce_op="mean")
        return coefs

    def training_step(self, rounds: Tensor, batch_idx: int) -> None:
        optimizer = self.optimizers()
        x = self.x
        coefs = self.coefficients(rounds)
        iterates = torch.empty_like(coefs)  # x_t, the point at which f_t is charged
        for i, c in enumerate(coefs):
            iterates[i] = x.detach()
            # f_t(x) = c_t . x is linear: its gradient is c_t; setting it directly skips an
            # autograd pass per round (most of the cost of a 1-D problem)
            x.grad = c
            optimizer.step()
            with torch.no_grad():
                x.clamp_(*DOMAIN)  # projection onto F (a no-op when the optimizer has bounds)
        self._account(coefs, iterates, rounds)

    def _account(self, coefs: Tensor, iterates: Tensor, rounds: Tensor) -> None:
        self.cumulative_loss += (coefs.double() * iterates.double()).sum(0)
        self.cumulative_coef += coefs.double().sum(0)
        self.cumulative_x += iterates.double().sum(0)
        self.rounds_played += rounds.numel()
        t = int(self.rounds_played)
        regret = self.cumulative_loss + self.cumulative_coef.abs()  # min over [-1, 1] is -|S|
        x_mean = self.x.detach().mean()
        avg_regret = (regret / t).mean()
        mu = self.expected_coefficient()
        expected = (mu * self.cumulative_x / t + abs(mu)).mean()  # min F on [-1, 1] is -|mu|
        self.history.append((t, float(x_mean), float(avg_regret)))
        self.expected_history.append((t, float(expected)))
        self.log("x", x_mean, prog_bar=True)
        self.log("avg_regret", avg_regret.float(), prog_bar=True)
        self.log("expected_avg_regret", expected.float())
        self.log("round", float(t))

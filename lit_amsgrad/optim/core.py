"""The shared core of every optimizer here: the paper's generic adaptive method.

:class:`AdaptiveOptimizer` owns everything the five optimizers have in common: argument
validation, lazy state, the step counter, weight decay (coupled or decoupled), the scalars of
step t (schedules and bias correction), the projection onto the box F, and ``inverse_lr``.
A subclass says only how its moments differ: which beta_2 schedule (:class:`EMAOptimizer`),
whether it keeps the running max, or a different moment rule altogether (AdaShift).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lit_amsgrad.errors import ConfigError

from . import fused as fused_kernels
from .functional import StepCoefficients, ema_step_foreach, ema_step_single
from .schedules import LR_SCHEDULES, ConstantBeta, first_moment_beta, lr_factor

BIAS_CORRECTIONS = ("none", "pytorch", "max_debiased")


def _fail(name: str, allowed: str, value: Any) -> ConfigError:
    return ConfigError(f"{name} must be {allowed}, got {value!r}")


def _check_number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, f"a number {allowed}", value)
    if math.isnan(value) or not ok(value):
        raise _fail(name, allowed, value)


class AdaptiveOptimizer(Optimizer):
    """Base class: x_{t+1} = Pi_F(x_t - alpha_t m_t / (sqrt(V_t) + eps)).

    Subclasses implement :meth:`_init_moments`, :meth:`_update_moments_and_params` and
    :meth:`_denominator`; everything else (validation, step counting, weight decay, schedules,
    projection, ``inverse_lr``) lives here once.

    ``fused=True`` (default False) runs each group's step as one kernel per device and dtype,
    traced with ``make_fx`` and compiled by inductor (C++ on CPU, Triton on CUDA), that reads
    and writes every state buffer once; the eager loop makes a pass per operation. Same
    state keys, dtypes and results (to float round-off) as the eager step, so checkpoints
    move between the two. lr, betas and the step t reach the kernel as tensor values:
    schedulers and the advancing t do not recompile. The first step pays the compile
    (``compile_seconds``, and an INFO log line from ``lit_amsgrad.optim.fused``); it pays off
    in runs of more than a few thousand steps. It reads ``p.grad`` at step time, so
    gradients unscaled by AMP (Lightning's precision plugin) need nothing special.
    """

    #: bias_correction modes this optimizer accepts; the first one is the paper's.
    bias_corrections: tuple[str, ...] = ("none", "pytorch")
    #: whether the optimizer keeps the running max v_hat (the AMSGrad family).
    keeps_running_max: bool = False
    #: set when beta_2 follows a schedule; ``betas`` is then (beta_1,)
    beta2_rule: str | None = None

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        lr_schedule: str = "constant",
        beta1_decay: float = 1.0,
        bias_correction: str = "none",
        bounds: Sequence[float] | None = None,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        fused: bool = False,
        **extra: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas) if isinstance(betas, (list, tuple)) else betas,
            eps=eps,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            beta1_decay=beta1_decay,
            bias_correction=bias_correction,
            bounds=tuple(bounds) if isinstance(bounds, (list, tuple)) else bounds,
            decoupled_weight_decay=decoupled_weight_decay,
            foreach=foreach,
            fused=fused,
            **extra,
        )
        if isinstance(self, EMAOptimizer):
            # torch's key, so that a state_dict saved here resumes in torch.optim.Adam as-is
            defaults["amsgrad"] = self.keeps_running_max
        self._validate(defaults)
        super().__init__(params, defaults)
        #: seconds this optimizer spent compiling fused kernels (0 when another instance of
        #: this process already compiled them, or without ``fused=True``)
        self.compile_seconds = 0.0

    # ----------------------------------------------------------------- validation
    def _validate(self, group: dict[str, Any]) -> None:
        """Raise a ValueError naming the bad argument and the allowed range."""
        _check_number("lr", group["lr"], lambda x: x >= 0, ">= 0")
        betas = group["betas"]
        n_betas = 1 if self.beta2_rule else 2
        if not isinstance(betas, tuple) or len(betas) != n_betas:
            if self.beta2_rule:
                raise _fail(
                    "betas",
                    f"(beta_1,) for {type(self).__name__}, whose beta_2 follows {self.beta2_rule}",
                    betas,
                )
            raise _fail("betas", "a pair (beta_1, beta_2)", betas)
        for i, beta in enumerate(betas):
            _check_number(f"betas[{i}]", beta, lambda x: 0 <= x < 1, "in [0, 1)")
        _check_number("eps", group["eps"], lambda x: x > 0, "> 0")
        _check_number("weight_decay", group["weight_decay"], lambda x: x >= 0, ">= 0")
        if group["lr_schedule"] not in LR_SCHEDULES:
            raise _fail("lr_schedule", f"one of {sorted(LR_SCHEDULES)}", group["lr_schedule"])
        _check_number("beta1_decay", group["beta1_decay"], lambda x: 0 < x <= 1, "in (0, 1]")
        if group["bias_correction"] not in self.bias_corrections:
            raise _fail(
                "bias_correction",
                f"one of {list(self.bias_corrections)} for {type(self).__name__}",
                group["bias_correction"],
            )
        bounds = group["bounds"]
        if bounds is not None:
            if not isinstance(bounds, tuple) or len(bounds) != 2:
                raise _fail("bounds", "None or a pair (low, high)", bounds)
            for name, value in zip(("bounds[0]", "bounds[1]"), bounds, strict=True):
                _check_number(name, value, lambda x: True, "")
            if not bounds[0] < bounds[1]:
                raise _fail("bounds", "a pair (low, high) with low < high", bounds)
        if group["foreach"] not in (None, True, False):
            raise _fail("foreach", "None, True or False", group["foreach"])
        fused = group.get("fused", False)
        if fused not in (True, False):
            raise _fail("fused", "True or False", fused)
        if fused and group["foreach"]:
            raise _fail("fused", "False when foreach=True (fused already does all at once)", fused)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate(self.param_groups[-1])

    # ------------------------------------------------------------------ schedules
    def _beta2_schedule(self, group: dict[str, Any]) -> Any:
        return ConstantBeta(group["betas"][1])

    def _alpha(self, group: dict[str, Any], t: int) -> float:
        """alpha_t before any bias correction: lr times the schedule."""
        factor = lr_factor(group["lr_schedule"], t)
        return group["lr"] if factor == 1.0 else group["lr"] * factor

    def _coefficients(self, group: dict[str, Any], t: float) -> StepCoefficients:
        """The scalars of step t. ``t`` is torch's float step, so beta ** t matches torch."""
        beta1_schedule = first_moment_beta(group["betas"][0], group["beta1_decay"])
        beta2_schedule = self._beta2_schedule(group)
        ti = int(t)
        alpha = self._alpha(group, ti)
        mode = group["bias_correction"]
        beta1, beta2 = beta1_schedule.value(ti), beta2_schedule.value(ti)
        if mode == "none":
            return StepCoefficients(beta1, beta2, alpha)
        step_size = alpha / (1 - beta1_schedule.product(t))
        bias_correction2 = 1 - beta2_schedule.product(t)
        if mode == "pytorch":
            return StepCoefficients(beta1, beta2, step_size, v_divisor_sqrt=bias_correction2**0.5)
        return StepCoefficients(beta1, beta2, step_size, max_divisor=bias_correction2)

    # ----------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimizer step over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = self._collect(group)
            if not params:
                continue
            if group.get("fused", False):
                self._fused_step(group, params, grads, states)
            else:
                self._eager_step(group, params, grads, states)
        return loss

    def _eager_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        foreach = self._use_foreach(group, params)
        steps = [state["step"] for state in states]
        if foreach:
            torch._foreach_add_(steps, 1.0)
        else:
            for step in steps:
                step += 1
        grads = self._apply_weight_decay(group, params, grads, steps, foreach)
        self._update_moments_and_params(group, params, grads, states, foreach)
        bounds = group["bounds"]
        if bounds is not None:
            if foreach:
                torch._foreach_clamp_min_(params, bounds[0])
                torch._foreach_clamp_max_(params, bounds[1])
            else:
                for param in params:
                    param.clamp_(bounds[0], bounds[1])

    # ---------------------------------------------------------------- fused step
    def _fused_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        """The whole step of the group in compiled kernels (see ``fused.py``)."""
        raise NotImplementedError

    @staticmethod
    def _fused_buckets(
        params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> list[tuple[torch.device, float, list[Tensor], list[Tensor], list[dict]]]:
        """(device, t after this step, params, grads, states) per kernel call: one per
        device, dtype and t; the usual case is a single one, with the lists as they came.

        This runs every step, so it reads each tensor's step count and kind once (``item``
        and ``get_device`` are the cheapest reads of a CPU scalar and a device)."""
        ts = [state["step"].item() for state in states]
        kinds = [(p.get_device(), p.dtype) for p in params]
        if ts.count(ts[0]) == len(ts) and kinds.count(kinds[0]) == len(kinds):
            return [(params[0].device, ts[0] + 1, params, grads, states)]
        buckets: dict[tuple, list[int]] = {}
        for i, (param, t) in enumerate(zip(params, ts, strict=True)):
            buckets.setdefault((param.device, param.dtype, t + 1), []).append(i)
        return [
            (device, t, [params[i] for i in ix], [grads[i] for i in ix], [states[i] for i in ix])
            for (device, _, t), ix in buckets.items()
        ]

    @staticmethod
    def _fused_steps(states: list[dict], device: torch.device) -> list[Tensor]:
        """The step counters for the kernel to increment; counted here where it cannot."""
        steps = [state["step"] for state in states]
        if fused_kernels.counts_steps_in_kernel(device):
            return steps
        torch._foreach_add_(steps, 1.0)
        return []

    def _fused_scalars(self, group: dict[str, Any], t: float) -> dict[str, float]:
        """Weight decay and bounds: the runtime scalars every fused kernel shares."""
        weight_decay = group["weight_decay"]
        values = {"eps": group["eps"], "weight_decay": weight_decay}
        if group["decoupled_weight_decay"]:
            values["decay_factor"] = 1 - self._alpha(group, int(t)) * weight_decay
        if group["bounds"] is not None:
            values["low"], values["high"] = group["bounds"]
        return values

    @staticmethod
    def _weight_decay_mode(group: dict[str, Any]) -> str:
        if group["weight_decay"] == 0:
            return "none"
        return "decoupled" if group["decoupled_weight_decay"] else "coupled"

    def _run_fused(self, flags: Any, lists: Sequence[list[Tensor]], *extras: Tensor) -> None:
        self.compile_seconds += fused_kernels.run(flags, lists, *extras)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads the trajectory; ``fused`` and ``foreach`` stay as this instance was built,
        since they say how to compute, not what (a fused run resumes eagerly and back)."""
        how = [(g.get("fused", False), g["foreach"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fused, foreach) in zip(self.param_groups, how, strict=True):
            group["fused"], group["foreach"] = fused, foreach

    def _collect(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[dict]]:
        params, grads, states = [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients "
                    "(use dense gradients, e.g. nn.Embedding(sparse=False))"
                )
            state = self.state[param]
            if not state:
                if torch.is_complex(param):
                    raise RuntimeError(f"{type(self).__name__} supports real parameters only")
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                self._init_moments(group, param, state)
            params.append(param)
            grads.append(param.grad)
            states.append(state)
        return params, grads, states

    @staticmethod
    def _use_foreach(group: dict[str, Any], params: list[Tensor]) -> bool:
        """Default: foreach on CUDA, where it wins; the per-tensor loop on CPU, where it wins."""
        if group["foreach"] is not None:
            return bool(group["foreach"])
        return all(p.is_cuda for p in params)

    def _apply_weight_decay(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        steps: list[Tensor],
        foreach: bool,
    ) -> list[Tensor]:
        weight_decay = group["weight_decay"]
        if weight_decay == 0:
            return grads
        if group["decoupled_weight_decay"]:
            # AdamW: shrink by alpha_t * wd (alpha_t = lr for the constant schedule, as torch).
            factors = [1 - self._alpha(group, int(step.item())) * weight_decay for step in steps]
            if foreach and len(set(factors)) == 1:
                torch._foreach_mul_(params, factors[0])
            else:
                for param, factor in zip(params, factors, strict=True):
                    param.mul_(factor)
            return grads
        if foreach:
            return list(torch._foreach_add(grads, params, alpha=weight_decay))
        return [
            grad.add(param, alpha=weight_decay) for grad, param in zip(grads, params, strict=True)
        ]

    # --------------------------------------------------------------- subclass API
    def _init_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> None:
        raise NotImplementedError

    def _update_moments_and_params(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        foreach: bool,
    ) -> None:
        raise NotImplementedError

    def _second_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> tuple:
        """(v_t, v_hat_t or None) as stored, broadcastable to ``param``."""
        raise NotImplementedError

    # ------------------------------------------------------------ introspection
    def _group_of(self, param: Tensor) -> dict[str, Any]:
        """The group of ``param``; an id index, rebuilt when the groups change, keeps a
        diagnostics pass over P parameters O(P) rather than O(P^2)."""
        index = getattr(self, "_group_index", None)
        group = index.get(id(param)) if index is not None else None
        if group is None or not any(g is group for g in self.param_groups):
            self._group_index = {id(p): g for g in self.param_groups for p in g["params"]}
            group = self._group_index.get(id(param))
            if group is None:
                raise KeyError("parameter is not managed by this optimizer")
        return group

    def _last_step(self, param: Tensor) -> tuple[dict[str, Any], dict]:
        state = self.state.get(param)
        if not state or "step_size" not in state:
            raise RuntimeError(
                "inverse_lr/second_moment describe the last step: call step() on this "
                "parameter first"
            )
        return self._group_of(param), state

    def inverse_lr(self, param: Tensor) -> Tensor:
        """(sqrt(v_hat_t) + eps) / alpha_t of the last step, element-wise.

        alpha_t is the whole scalar that multiplied m_t, v_hat_t the second moment as used,
        so the last update was -m_t / inverse_lr(p) before projection and the effective step
        size is 1 / inverse_lr(p).
        """
        group, state = self._last_step(param)
        v, v_hat = self._second_moments(group, param, state)
        used = v_hat if v_hat is not None else v
        denom = used.sqrt()
        if state["v_divisor_sqrt"] is not None:
            denom = denom / state["v_divisor_sqrt"]
        denom = (denom + group["eps"]).expand_as(param)
        return denom / state["step_size"]

    def second_moment(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        """(v_t, v_hat_t) of the last step in the scale the step used them (debiased where
        the mode debiases); v_hat_t is None for optimizers without the running max."""
        group, state = self._last_step(param)
        v, v_hat = self._second_moments(group, param, state)
        if state["v_divisor_sqrt"] is not None:
            divisor = state["v_divisor_sqrt"] ** 2
            v = v / divisor
            v_hat = v_hat / divisor if v_hat is not None else None
        elif state.get("max_divisor") is not None:
            v = v / state["max_divisor"]
        return v.expand_as(param), v_hat.expand_as(param) if v_hat is not None else None


class EMAOptimizer(AdaptiveOptimizer):
    """Adam-style moments: exponential moving averages, optionally with the running max."""

    def _init_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> None:
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if self.keeps_running_max:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _second_moments(self, group: dict[str, Any], param: Tensor, state: dict) -> tuple:
        return state["exp_avg_sq"], state.get("max_exp_avg_sq")

    def _update_moments_and_params(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict],
        foreach: bool,
    ) -> None:
        by_step: dict[float, StepCoefficients] = {}
        coefficients = []
        for state in states:
            t = state["step"].item()
            c = by_step.get(t)
            if c is None:
                c = by_step[t] = self._coefficients(group, t)
            coefficients.append(c)
            state["step_size"] = c.step_size
            state["v_divisor_sqrt"] = c.v_divisor_sqrt
            state["max_divisor"] = c.max_divisor
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        max_exp_avg_sqs = [s["max_exp_avg_sq"] for s in states] if self.keeps_running_max else []
        amsgrad, eps = self.keeps_running_max, group["eps"]
        if not foreach:
            ema_step_single(
                params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, coefficients,
                amsgrad=amsgrad, eps=eps,
            )  # fmt: skip
            return
        # foreach needs one device, dtype and step t per call
        buckets: dict[tuple, list[int]] = {}
        for i, (param, c) in enumerate(zip(params, coefficients, strict=True)):
            buckets.setdefault((param.device, param.dtype, id(c)), []).append(i)
        for indices in buckets.values():

            def pick(tensors: list[Tensor], indices: list[int] = indices) -> list[Tensor]:
                return [tensors[i] for i in indices] if tensors else []

            ema_step_foreach(
                pick(params), pick(grads), pick(exp_avgs), pick(exp_avg_sqs),
                pick(max_exp_avg_sqs), coefficients[indices[0]], amsgrad=amsgrad, eps=eps,
            )  # fmt: skip

    def _fused_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        buckets = self._fused_buckets(params, grads, states)
        for device, t, picked_params, picked_grads, picked_states in buckets:
            c = self._coefficients(group, t)
            for state in picked_states:
                state["step_size"] = c.step_size
                state["v_divisor_sqrt"] = c.v_divisor_sqrt
                state["max_divisor"] = c.max_divisor
            flags = fused_kernels.EMAFlags(
                amsgrad=self.keeps_running_max,
                v_divisor=c.v_divisor_sqrt is not None,
                max_divisor=c.max_divisor is not None,
                weight_decay=self._weight_decay_mode(group),
                bounded=group["bounds"] is not None,
            )
            values = self._fused_scalars(group, t)
            values.update(
                beta1=c.beta1, one_minus_beta1=1 - c.beta1, beta2=c.beta2,
                one_minus_beta2=1 - c.beta2, step_size=c.step_size,
            )  # fmt: skip
            if c.v_divisor_sqrt is not None:
                values["v_divisor_sqrt"] = c.v_divisor_sqrt
            if c.max_divisor is not None:
                values["max_divisor"] = c.max_divisor
            maxes = [st["max_exp_avg_sq"] for st in picked_states] if self.keeps_running_max else []
            self._run_fused(
                flags,
                [picked_params, picked_grads, [st["exp_avg"] for st in picked_states],
                 [st["exp_avg_sq"] for st in picked_states], maxes,
                 self._fused_steps(picked_states, device)],
                fused_kernels.pack(fused_kernels.EMA_SCALARS, values, picked_params[0]),
            )  # fmt: skip

"""The shared core of every optimizer here: the paper's generic adaptive method.

x_{t+1} = Pi_F(x_t - alpha_t m_t / D_t), D_t = sqrt(V_t) + eps. :class:`AdaptiveOptimizer`
owns what the family has in common and what makes it a torch optimizer: argument checks,
lazy state, step counting, ``maximize``, weight decay (coupled or decoupled), the projection
onto the box F, the eager and the fused step, state_dict compatibility with torch, and
``inverse_lr`` / ``second_moment`` for the diagnostics.

An optimizer is its *rule*, written once as plain per-tensor math (the public extension
points, see the README's fork guide):

- ``init_state(group, param)``: the state tensors of a new parameter;
- ``step_scalars(group, t)``: the numbers of step t (``step_size`` = alpha_t, the whole scalar
  that multiplies m_t) and the structure (bools, strings, None) the rule branches on;
- ``update_moments(grad, state, s)``: updates the moments in place (``after_update``: writes
  that come after the parameter's update);
- ``denominator(state, s)``: D_t; ``numerator(state, s)``: m_t (``exp_avg`` by default);
- ``second_moments(state, s)``: (v_t, v_hat_t or None) in the scale D_t uses them.

:meth:`AdaptiveOptimizer.tensor_step` composes them into one parameter's update; the eager
step calls it tensor by tensor with Python floats (torch's own ops, so the ``"pytorch"``
mode equals torch bit for bit), the fused step traces that same method over the group and
compiles it (``fused.py``), and the diagnostics evaluate the same ``denominator``. A rule
cannot run one way eagerly and another way fused.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lit_amsgrad.errors import ConfigError

from . import fused as fused_kernels
from .scalars import StepScalars, TensorScalarOps
from .schedules import LR_SCHEDULES, ConstantBeta, first_moment_beta, lr_factor

BIAS_CORRECTIONS = ("none", "pytorch", "max_debiased")

#: group keys that say how to compute, not what: kept as this instance was built on load
HOW_KEYS = ("foreach", "fused", "capturable", "differentiable")
#: what torch's Adam/AdamW do, for the keys of ours their state dicts lack: a torch state
#: continues only in an optimizer built this way (anything else would run another rule on it)
TORCH_SEMANTICS = {
    "bias_correction": "pytorch",
    "lr_schedule": "constant",
    "beta1_decay": 1.0,
    "bounds": None,
}


def _fail(name: str, allowed: str, value: Any) -> ConfigError:
    return ConfigError(f"{name} must be {allowed}, got {value!r}")


def check_number(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
    """Raise a ConfigError naming ``name`` unless ``value`` is a real number with ``ok``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor):
            allowed = f"{allowed} (a Python number: tensor hyperparameters are not supported)"
        raise _fail(name, f"a number {allowed}".rstrip(), value)
    if math.isnan(value) or not ok(value):
        raise _fail(name, allowed, value)


_check_number = check_number  # the name earlier versions exported


class AdaptiveOptimizer(Optimizer):
    """Base class of the family; a subclass defines its rule (see the module docstring).

    ``fused=True`` (default False) runs each group's step as one kernel per device and dtype,
    compiled from :meth:`tensor_step` (``fused.py``): it reads and writes every state buffer
    once, where the eager loop makes a pass per operation. Same state keys and dtypes and
    results (to float round-off) as the eager step, so checkpoints move between the two. The
    first step pays the compile (``compile_seconds``, and an INFO log line from
    ``lit_amsgrad.optim.fused``); it pays off in runs of more than a few thousand steps. A
    rule that cannot be traced is refused at construction.

    torch's flags: ``maximize`` is supported; ``foreach=True``, ``capturable=True`` and
    ``differentiable=True`` are refused (the eager step runs tensor by tensor, use
    ``fused=True`` for a multi-tensor step); unknown keyword arguments raise ``TypeError``.
    """

    #: bias_correction modes this optimizer accepts; the first one is the paper's.
    bias_corrections: tuple[str, ...] = ("none", "pytorch")
    #: set when beta_2 follows a schedule; ``betas`` is then (beta_1,)
    beta2_rule: str | None = None
    #: whether the optimizer keeps the running max v_hat_t = max(v_hat_{t-1}, v_t)
    keeps_running_max: bool = False

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
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        **hyperparameters: Any,
    ) -> None:
        self._check_keywords(hyperparameters)
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
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
            **hyperparameters,
        )
        if isinstance(self, EMAOptimizer):
            # torch's key, so that a state_dict saved here resumes in torch.optim.Adam as-is
            defaults["amsgrad"] = self.keeps_running_max
        self.validate(defaults)
        super().__init__(params, defaults)
        #: seconds this optimizer spent compiling fused kernels (0 when another instance of
        #: this process already compiled them, or without ``fused=True``)
        self.compile_seconds = 0.0
        if fused:
            self._check_traceable()

    # ----------------------------------------------------------------- arguments
    @classmethod
    def hyperparameter_names(cls) -> set[str]:
        """The keyword arguments of this class: the core's and every subclass ``__init__``'s."""
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is Optimizer or not issubclass(klass, AdaptiveOptimizer):
                continue
            kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            names |= {
                p.name for p in inspect.signature(init).parameters.values() if p.kind in kinds
            }
        return names - {"self", "params"}

    def _check_keywords(self, hyperparameters: dict[str, Any]) -> None:
        name = type(self).__name__
        if "amsgrad" in hyperparameters:
            amsgrad = hyperparameters.pop("amsgrad")
            if bool(amsgrad) != self.keeps_running_max:
                use = "lit_amsgrad.optim.AMSGrad" if amsgrad else "lit_amsgrad.optim.Adam"
                raise ConfigError(
                    f"amsgrad={amsgrad!r} is not an option of {name}: use {use} "
                    "(bias_correction='pytorch' equals torch.optim.Adam(amsgrad=True))"
                )
        known = self.hyperparameter_names()
        unknown = sorted(set(hyperparameters) - known)
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(key, known, n=1))
                else repr(key)
                for key in unknown
            ]
            raise TypeError(
                f"{name} got unexpected keyword argument(s) {', '.join(hints)}; "
                f"its arguments are {', '.join(sorted(known))}"
            )

    def validate(self, group: dict[str, Any]) -> None:
        """Raise a ConfigError (a ValueError) naming the bad argument and the allowed range.

        A subclass with arguments of its own extends this (``super().validate(group)``)."""
        check_number("lr", group["lr"], lambda x: x >= 0, ">= 0")
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
            check_number(f"betas[{i}]", beta, lambda x: 0 <= x < 1, "in [0, 1)")
        check_number("eps", group["eps"], lambda x: x > 0, "> 0")
        check_number("weight_decay", group["weight_decay"], lambda x: x >= 0, ">= 0")
        if group["lr_schedule"] not in LR_SCHEDULES:
            raise _fail("lr_schedule", f"one of {sorted(LR_SCHEDULES)}", group["lr_schedule"])
        check_number("beta1_decay", group["beta1_decay"], lambda x: 0 < x <= 1, "in (0, 1]")
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
                check_number(name, value, lambda x: True, "")
            if not bounds[0] < bounds[1]:
                raise _fail("bounds", "a pair (low, high) with low < high", bounds)
        for flag in ("decoupled_weight_decay", "maximize"):
            if group[flag] not in (True, False):
                raise _fail(flag, "True or False", group[flag])
        if group["foreach"] not in (None, False):
            raise _fail(
                "foreach",
                "None or False (the eager step runs tensor by tensor; fused=True is the "
                "multi-tensor step)",
                group["foreach"],
            )
        if group["fused"] not in (True, False):
            raise _fail("fused", "True or False", group["fused"])
        if group["capturable"] is not False:
            raise _fail(
                "capturable",
                "False (CUDA-graph capture is not supported; fused=True is the one-kernel step)",
                group["capturable"],
            )
        if group["differentiable"] is not False:
            raise _fail(
                "differentiable",
                "False (the step runs under no_grad; to differentiate through the update, "
                "write it functionally, e.g. with torch.func)",
                group["differentiable"],
            )
        for param in group.get("params", ()):
            if torch.is_complex(param):
                raise ConfigError(
                    f"{type(self).__name__} supports real parameters only, got a {param.dtype} "
                    "parameter (optimize torch.view_as_real(p) instead)"
                )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.validate(self.param_groups[-1])

    # ------------------------------------------------------------- the rule: API
    def init_state(self, group: dict[str, Any], param: Tensor) -> dict[str, Tensor]:
        """The state tensors of a new parameter (``step`` is added by the core)."""
        raise NotImplementedError

    def alpha(self, group: dict[str, Any], t: int) -> float:
        """alpha_t before any bias correction: lr times the lr schedule."""
        factor = lr_factor(group["lr_schedule"], t)
        return group["lr"] if factor == 1.0 else group["lr"] * factor

    def step_scalars(self, group: dict[str, Any], t: int) -> dict[str, Any]:
        """The numbers of step t (``step_size`` and whatever the rule reads) and its
        structure; the core adds weight decay, maximize and bounds."""
        raise NotImplementedError

    def tensors_for_step(
        self, group: dict[str, Any], param: Tensor, state: dict[str, Any], t: int
    ) -> dict[str, Tensor]:
        """The state tensors step t reads and writes (default: all but ``step``); a rule with
        a ring buffer hands out the slot of step t as a view (AdaShift)."""
        tensors = dict(state)  # a C-level copy: a comprehension cost 3x, 60 times a step
        del tensors["step"]
        return tensors

    def update_moments(self, grad: Tensor, state: dict[str, Tensor], s: StepScalars) -> None:
        """Update the moments in place from the gradient of step t."""
        raise NotImplementedError

    def after_update(self, grad: Tensor, state: dict[str, Tensor], s: StepScalars) -> None:
        """State writes that come after the parameter's update (AdaShift's window slot):
        written last, they let the compiled step stream each tensor once."""

    def numerator(self, state: dict[str, Tensor], s: StepScalars) -> Tensor:
        """m_t, the direction the step divides by D_t."""
        return state["exp_avg"]

    def denominator(self, state: dict[str, Tensor], s: StepScalars) -> Tensor:
        """D_t = sqrt(v_hat_t) + eps as the step uses it (a new tensor)."""
        raise NotImplementedError

    def second_moments(
        self, state: dict[str, Tensor], s: StepScalars
    ) -> tuple[Tensor, Tensor | None]:
        """(v_t, v_hat_t or None) in the scale the denominator uses them."""
        raise NotImplementedError

    # -------------------------------------------------------- the rule: composed
    def scalars_at(self, group: dict[str, Any], t: int) -> StepScalars:
        """Everything step t of ``group`` needs, the rule's and the core's."""
        s = StepScalars(self.step_scalars(group, t))
        s["maximize"] = bool(group["maximize"])
        weight_decay = group["weight_decay"]
        if weight_decay == 0:
            s["weight_decay_mode"] = "none"
        elif group["decoupled_weight_decay"]:
            s["weight_decay_mode"] = "decoupled"
            s["decay_factor"] = 1 - self.alpha(group, t) * weight_decay
        else:
            s["weight_decay_mode"] = "coupled"
            s["weight_decay"] = weight_decay
        s["bounded"] = group["bounds"] is not None
        if s["bounded"]:
            s["low"], s["high"] = group["bounds"]
        return s

    def tensor_step(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], s: StepScalars
    ) -> None:
        """One parameter's whole update at step t: the one definition of the step, which the
        eager loop calls with floats and the fused step traces and compiles."""
        if s.maximize:
            grad = -grad
        if s.weight_decay_mode == "coupled":
            grad = grad.add(param, alpha=s.weight_decay)
        elif s.weight_decay_mode == "decoupled":
            param.mul_(s.decay_factor)
        self.update_moments(grad, state, s)
        param.addcdiv_(self.numerator(state, s), self.denominator(state, s), value=-s.step_size)
        if s.bounded:
            param.clamp_(s.low, s.high)
        self.after_update(grad, state, s)

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
            if group["fused"]:
                self._fused_step(group, params, grads, states)
            else:
                self._eager_step(group, params, grads, states)
        return loss

    def _eager_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        """Tensor by tensor, as torch's own loop: count the step, then update (a parameter
        listed twice is updated twice, at t and t + 1)."""
        scalars: dict[int, StepScalars] = {}
        for param, grad, state in zip(params, grads, states, strict=True):
            step = state["step"]
            step += 1
            t = int(step.item())
            s = scalars.get(t)
            if s is None:
                s = scalars[t] = self.scalars_at(group, t)
            self.tensor_step(param, grad, self.tensors_for_step(group, param, state, t), s)

    def _fused_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> None:
        """The group's step in compiled kernels: one per device, dtype and step t."""
        for device, t, ps, gs, sts in self._fused_buckets(params, grads, states):
            s = self.scalars_at(group, t)
            structure, values = s.packed(ps[0])
            in_kernel = fused_kernels.counts_steps_in_kernel(device)
            steps = [state["step"] for state in sts]
            if not in_kernel:
                torch._foreach_add_(steps, 1.0)
            tensors = [
                self.tensors_for_step(group, p, st, t) for p, st in zip(ps, sts, strict=True)
            ]
            self.compile_seconds += fused_kernels.run(
                (type(self).__qualname__, type(self), structure), lambda s=s: self._fused_body(s),
                ps, gs, tensors, steps if in_kernel else [], values,
            )  # fmt: skip

    def _fused_body(self, s: StepScalars) -> fused_kernels.Body:
        def body(params, grads, states, steps, values):
            for step in steps:
                step.add_(1)
            traced = StepScalars.traced(s, values)
            for param, grad, state in zip(params, grads, states, strict=True):
                self.tensor_step(param, grad, state, traced)

        return body

    def _check_traceable(self) -> None:
        """fused=True: trace the rule once on a small fake tensor, so that a rule that cannot
        be compiled is refused here rather than at the first step."""
        for group in self.param_groups:
            param = torch.zeros(2, dtype=torch.float32)
            state = self.init_state(group, param)
            state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
            state["step"] = torch.tensor(0.0)
            s = self.scalars_at(group, 1)
            tensors = self.tensors_for_step(group, param, state, 1)
            _, values = s.packed(param)
            try:
                fused_kernels.trace(
                    self._fused_body(s), [param], [torch.ones(2)], [tensors], [state["step"]],
                    values,
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001 - any tracing failure means the same
                raise ConfigError(
                    f"fused=True: {type(self).__name__}'s update rule cannot be compiled "
                    f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                    "a rule must branch only on the structure of its step scalars (bools, "
                    "strings, None), not on tensor values or numbers. Use fused=False."
                ) from error

    @staticmethod
    def _fused_buckets(
        params: list[Tensor], grads: list[Tensor], states: list[dict]
    ) -> list[tuple[torch.device, int, list[Tensor], list[Tensor], list[dict]]]:
        """(device, t after this step, params, grads, states) per kernel call: one per
        device, dtype and t, and a second round for a parameter listed twice (torch updates
        it twice, at t and t + 1); the usual case is one call with the lists as they came."""
        ts = [state["step"].item() for state in states]
        kinds = [(p.get_device(), p.dtype) for p in params]
        unique = len({id(p) for p in params}) == len(params)
        if unique and ts.count(ts[0]) == len(ts) and kinds.count(kinds[0]) == len(kinds):
            return [(params[0].device, int(ts[0]) + 1, params, grads, states)]
        buckets: dict[tuple, list[int]] = {}
        seen: dict[int, int] = {}
        for i, (param, t) in enumerate(zip(params, ts, strict=True)):
            occurrence = seen[id(param)] = seen.get(id(param), -1) + 1
            key = (occurrence, param.device, param.dtype, int(t) + 1 + occurrence)
            buckets.setdefault(key, []).append(i)
        return [
            (device, t, [params[i] for i in ix], [grads[i] for i in ix], [states[i] for i in ix])
            for (_, device, _, t), ix in sorted(buckets.items(), key=lambda kv: kv[0][0])
        ]

    def _collect(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[dict]]:
        params, grads, states = [], [], []
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients "
                    "(use dense gradients, e.g. nn.Embedding(sparse=False))"
                )
            state = self.state[param]
            if not state:
                state.update(self.init_state(group, param))
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
            params.append(param)
            grads.append(grad)
            states.append(state)
        return params, grads, states

    # -------------------------------------------------------------- state_dict
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a trajectory saved here or by ``torch.optim.Adam`` / ``AdamW``.

        Hyperparameters come from the saved groups, as in torch; keys the saved groups lack
        (a torch state has no ``bias_correction``) keep this instance's values, and the keys
        that say how to compute (``fused``, ``foreach``, ...) stay as this instance was built
        (a fused run resumes eagerly and back). Float steps (older torch) become tensors.
        Load hooks see what torch's would: pre-hooks the state dict as given, post-hooks
        the loaded state."""
        pre_hooks = self._optimizer_load_state_dict_pre_hooks
        post_hooks = self._optimizer_load_state_dict_post_hooks
        state_dict = state_dict.copy()
        for hook in pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        merged = {**state_dict, "param_groups": self._merge_groups(state_dict["param_groups"])}
        # torch's loader, without running the hooks a second time
        self._optimizer_load_state_dict_pre_hooks = type(pre_hooks)()
        self._optimizer_load_state_dict_post_hooks = type(post_hooks)()
        try:
            super().load_state_dict(merged)
        finally:
            self._optimizer_load_state_dict_pre_hooks = pre_hooks
            self._optimizer_load_state_dict_post_hooks = post_hooks
        for group in self.param_groups:
            self.validate(group)
        for state in self.state.values():
            step = state.get("step") if isinstance(state, dict) else None
            if step is not None and not (
                isinstance(step, Tensor) and step.device.type == "cpu"
                and step.dtype == torch.float32
            ):  # fmt: skip
                state["step"] = torch.tensor(float(step), dtype=torch.float32)
        for hook in post_hooks.values():
            hook(self)

    def _merge_groups(self, saved_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The saved groups with the keys they lack from this instance's, how-keys kept; a
        torch state into an optimizer that would run it another way is refused."""
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        merged = []
        for saved, own in zip(saved_groups, self.param_groups, strict=True):
            if "amsgrad" in saved and bool(saved["amsgrad"]) != self.keeps_running_max:
                kind = "with" if saved["amsgrad"] else "without"
                use = "AMSGrad" if saved["amsgrad"] else "Adam"
                raise ConfigError(
                    f"the state was saved by an optimizer {kind} the running max "
                    f"(amsgrad={saved['amsgrad']}); load it into lit_amsgrad.optim.{use}"
                )
            for key, torch_value in TORCH_SEMANTICS.items():
                if key not in saved and key in own and own[key] != torch_value:
                    raise ConfigError(
                        f"the state has no {key!r} (torch.optim.Adam/AdamW saved it), and "
                        f"torch's step means {key}={torch_value!r}; this optimizer has "
                        f"{key}={own[key]!r}: build it with {key}={torch_value!r} to continue "
                        "that trajectory"
                    )
            group = {k: v for k, v in own.items() if k != "params"}
            group.update({k: v for k, v in saved.items() if k not in HOW_KEYS})
            for key in HOW_KEYS:
                group[key] = own[key]
            if "amsgrad" in own:
                group["amsgrad"] = own["amsgrad"]
            merged.append(group)
        return merged

    def __getstate__(self) -> dict[str, Any]:
        """Pickling and deepcopy keep the public attributes (torch's keep only three)."""
        state = super().__getstate__()
        state["compile_seconds"] = self.compile_seconds
        return state

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

    def _last_step(
        self, param: Tensor, scalars: dict[tuple[int, int], StepScalars] | None = None
    ) -> tuple[dict[str, Tensor], StepScalars]:
        state = self.state.get(param)
        t = int(state["step"].item()) if state and "step" in state else 0
        if t == 0:
            raise RuntimeError(
                "inverse_lr/second_moment describe the last step: call step() on this "
                "parameter first"
            )
        group = self._group_of(param)
        key = (id(group), t)
        s = scalars.get(key) if scalars is not None else None
        if s is None:
            s = self.scalars_at(group, t)
            if scalars is not None:
                scalars[key] = s
        return self.tensors_for_step(group, param, state, t), s

    def moments(
        self, params: list[Tensor]
    ) -> tuple[list[Tensor], list[tuple[Tensor, Tensor | None]]]:
        """``inverse_lr`` and ``second_moment`` of every parameter in ``params``, with the
        scalars of each group's step t computed once: what the diagnostics read at a logging
        step. A subclass that overrides ``inverse_lr`` or ``second_moment`` is answered by
        its overrides."""
        if self._overrides_moments():
            return [self.inverse_lr(p) for p in params], [self.second_moment(p) for p in params]
        return self._moments(params)

    def _moments(
        self, params: list[Tensor]
    ) -> tuple[list[Tensor], list[tuple[Tensor, Tensor | None]]]:
        scalars: dict[tuple[int, int], StepScalars] = {}
        invs, second = [], []
        for param in params:
            state, s = self._last_step(param, scalars)
            inv, moment = self._moments_of_one(state, s, param.shape)
            invs.append(inv)
            second.append(moment)
        return invs, second

    def moments_program(self, params: list[Tensor]) -> MomentsProgram | None:
        """:meth:`moments` as a function of tensors, for a caller that compiles it (the
        diagnostics' logging step, ``callbacks.compiled_stats``): the same ``denominator`` and
        ``second_moments``, with each group's numbers of step t as elements of one tensor, as
        the fused step traces the rule. None when a subclass answers ``inverse_lr`` or
        ``second_moment`` itself (the caller then evaluates :meth:`moments`)."""
        if self._overrides_moments():
            return None
        scalars: dict[tuple[int, int], StepScalars] = {}
        sets: dict[tuple, int] = {}  # (step scalars, dtype, device) -> index into values
        values: list[Tensor] = []
        structures, rules, per_param, tensors = [], [], [], []
        for param in params:
            state, s = self._last_step(param, scalars)
            key = (id(s), param.dtype, param.device)
            index = sets.get(key)
            if index is None:
                structure, packed = s.packed(param)
                index = sets[key] = len(values)
                values.append(packed)
                structures.append(structure)
                rules.append(s)
            per_param.append((index, tuple(state), tuple(param.shape)))
            tensors.extend(state.values())

        def evaluate(
            flat: Sequence[Tensor],
        ) -> tuple[list[Tensor], list[tuple[Tensor, Tensor | None]]]:
            traced = [
                StepScalars.traced(s, v) for s, v in zip(rules, flat[: len(rules)], strict=True)
            ]
            it = iter(flat[len(rules) :])
            invs, second = [], []
            with TensorScalarOps():
                for index, keys, shape in per_param:
                    state = {key: next(it) for key in keys}
                    inv, moment = self._moments_of_one(state, traced[index], shape)
                    invs.append(inv)
                    second.append(moment)
            return invs, second

        return MomentsProgram(
            (type(self), tuple(structures), tuple(per_param)), [*values, *tensors], evaluate
        )

    def _overrides_moments(self) -> bool:
        cls = type(self)
        return (cls.inverse_lr, cls.second_moment) != (
            AdaptiveOptimizer.inverse_lr,
            AdaptiveOptimizer.second_moment,
        )

    def _moments_of_one(
        self, state: dict[str, Tensor], s: StepScalars, shape: torch.Size | tuple[int, ...]
    ) -> tuple[Tensor, tuple[Tensor, Tensor | None]]:
        """The one definition of (inverse_lr, (v, v_hat)) of one parameter at step t: the
        eager ``moments`` calls it with floats, ``moments_program`` traces it."""
        inv = (self.denominator(state, s) / s.step_size).expand(shape)
        v, v_hat = self.second_moments(state, s)
        return inv, (_shaped_as(v, shape), _shaped_as(v_hat, shape))

    def inverse_lr(self, param: Tensor) -> Tensor:
        """D_t / alpha_t of the last step, element-wise: (sqrt(v_hat_t) + eps) / alpha_t.

        alpha_t is the whole scalar that multiplied m_t, v_hat_t the second moment as used,
        so the last update was -m_t / inverse_lr(p) before projection and the effective step
        size is 1 / inverse_lr(p). It is the rule's own ``denominator`` with the group's
        hyperparameters as they are now: read it before a scheduler changes lr (the
        diagnostics read it in the step's post-hook)."""
        return self._moments([param])[0][0]

    def second_moment(self, param: Tensor) -> tuple[Tensor, Tensor | None]:
        """(v_t, v_hat_t) of the last step in the scale the step used them (debiased where
        the mode debiases); v_hat_t is None for optimizers without the running max."""
        return self._moments([param])[1][0]


def _shaped_as(moment: Tensor | None, shape: torch.Size | tuple[int, ...]) -> Tensor | None:
    """``moment`` broadcast to the parameter's shape; the state tensor itself when it has that
    shape already (the diagnostics then read it once, as state and as moment)."""
    if moment is None or moment.shape == shape:
        return moment
    return moment.expand(shape)


@dataclasses.dataclass(frozen=True)
class MomentsProgram:
    """``moments(params)`` as a function of tensors: ``evaluate(tensors)`` returns what
    ``moments`` returns, computed from ``tensors`` (each group's step numbers, then the state)
    by the same rule. ``structure`` is everything ``evaluate`` bakes in besides the tensors'
    layouts, so a compiled ``evaluate`` serves every program with the same structure."""

    structure: Hashable
    tensors: list[Tensor]
    evaluate: Callable[[Sequence[Tensor]], tuple[list[Tensor], list[tuple[Tensor, Tensor | None]]]]


class EMAOptimizer(AdaptiveOptimizer):
    """Adam-style moments: exponential moving averages, with the running max when
    :attr:`keeps_running_max`.

    A subclass changes the schedules (:meth:`beta2_schedule`, :meth:`alpha`) or the moment
    rule itself (:meth:`update_moments`, reading its own numbers from :meth:`step_scalars`)."""

    def beta2_schedule(self, group: dict[str, Any]) -> Any:
        """beta_2t as a schedule object with ``value(t)`` and ``product(t)``."""
        return ConstantBeta(group["betas"][1])

    def init_state(self, group: dict[str, Any], param: Tensor) -> dict[str, Tensor]:
        state = {
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if self.keeps_running_max:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def step_scalars(self, group: dict[str, Any], t: int) -> dict[str, Any]:
        """beta_1t, beta_2t and alpha_t, with the bias correction of the mode: ``"pytorch"``
        divides sqrt(v) by sqrt(1 - prod beta_2) (``bias_correction2_sqrt``, torch's name),
        ``"max_debiased"`` divides v by 1 - prod beta_2 before the max (``max_divisor``)."""
        beta1_schedule = first_moment_beta(group["betas"][0], group["beta1_decay"])
        beta2_schedule = self.beta2_schedule(group)
        beta1, beta2 = beta1_schedule.value(t), beta2_schedule.value(t)
        s = dict(
            beta1=beta1, one_minus_beta1=1 - beta1, beta2=beta2, one_minus_beta2=1 - beta2,
            eps=group["eps"], step_size=self.alpha(group, t), running_max=self.keeps_running_max,
            bias_correction2_sqrt=None, max_divisor=None,
        )  # fmt: skip
        mode = group["bias_correction"]
        if mode != "none":
            # t as a float: beta ** float(t), as torch's loop computes it
            s["step_size"] = s["step_size"] / (1 - beta1_schedule.product(float(t)))
            bias_correction2 = 1 - beta2_schedule.product(float(t))
            if mode == "pytorch":
                s["bias_correction2_sqrt"] = bias_correction2**0.5
            else:
                s["max_divisor"] = bias_correction2
        return s

    def update_moments(self, grad: Tensor, state: dict[str, Tensor], s: StepScalars) -> None:
        """torch's own ops in torch's order (``torch/optim/adam.py``)."""
        state["exp_avg"].lerp_(grad, s.one_minus_beta1)
        state["exp_avg_sq"].mul_(s.beta2).addcmul_(grad, grad, value=s.one_minus_beta2)
        if s.running_max:
            v = state["exp_avg_sq"]
            if s.max_divisor is not None:
                v = v / s.max_divisor
            torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])

    def denominator(self, state: dict[str, Tensor], s: StepScalars) -> Tensor:
        used = state["max_exp_avg_sq"] if s.running_max else state["exp_avg_sq"]
        denom = used.sqrt()
        if s.bias_correction2_sqrt is not None:
            denom = denom / s.bias_correction2_sqrt
        return denom.add_(s.eps)

    def second_moments(
        self, state: dict[str, Tensor], s: StepScalars
    ) -> tuple[Tensor, Tensor | None]:
        v, v_hat = state["exp_avg_sq"], state.get("max_exp_avg_sq") if s.running_max else None
        if s.bias_correction2_sqrt is not None:
            divisor = s.bias_correction2_sqrt**2
            return v / divisor, v_hat / divisor if v_hat is not None else None
        if s.max_divisor is not None:
            return v / s.max_divisor, v_hat
        return v, v_hat

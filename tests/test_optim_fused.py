"""fused=True: the compiled step equals the eager one, interchanges state with it, does not
recompile when lr or t change, and notices inputs whose layout changed.

Compiling is slow on a small CPU, so the tests share kernels: the compiled kernels live in a
process-wide cache keyed by (mode flags, device, dtype, shapes), and every test here steps the
same three shapes. The full matrix of modes is marked slow.
"""

import copy
import os
import subprocess
import sys

import pytest
import torch

from lit_amsgrad.optim import Adam, AdamNC, AdaShift, AMSGrad, GenericAdam, fused

SHAPES = [(4, 3), (5,), ()]
STEPS = 100

# (class, kwargs): the fast set covers every kernel flag at least once
FAST = [
    (AMSGrad, dict(bias_correction="none", weight_decay=0.01)),
    (Adam, dict(bias_correction="pytorch", weight_decay=0.1, decoupled_weight_decay=True)),
    (AMSGrad, dict(bias_correction="max_debiased", bounds=(-0.5, 0.5))),
    (AdaShift, dict(n=3, block="row", bias_correction="pytorch", weight_decay=0.01)),
]
SLOW = [
    (Adam, dict(bias_correction="none")),
    (AMSGrad, dict(bias_correction="pytorch", weight_decay=0.01)),
    (AMSGrad, dict(bias_correction="none", lr_schedule="inv_sqrt", beta1_decay=0.999)),
    (AMSGrad, dict(bias_correction="none", weight_decay=0.1, decoupled_weight_decay=True)),
    (AMSGrad, dict(bias_correction="pytorch", bounds=(-0.5, 0.5), weight_decay=0.01)),
    (AdamNC, dict(betas=(0.9,), lr_schedule="inv_sqrt", weight_decay=0.01)),
    (AdamNC, dict(betas=(0.9,), bias_correction="pytorch")),
    (GenericAdam, dict(betas=(0.9,), theta=1.0, r=0.5, s=0.5, weight_decay=0.01)),
    (GenericAdam, dict(betas=(0.9,), theta=0.5, r=1.0, s=0.5)),
    (AdaShift, dict(n=3, block="tensor")),
    (AdaShift, dict(n=3, block="element", weight_decay=0.01)),
    (AdaShift, dict(n=4, block="tensor", weight_decay=0.1, decoupled_weight_decay=True)),
    (AdaShift, dict(n=3, block="row", bounds=(-0.5, 0.5))),
]


def _ids(cases):
    return [f"{c.__name__}-{'-'.join(str(v) for v in kw.values())}" for c, kw in cases]


FAMILY = FAST + [pytest.param(*case, marks=pytest.mark.slow) for case in SLOW]
IDS = _ids(FAST) + _ids(SLOW)


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_(True) for s in SHAPES]


def _run(opt, params, gen, steps):
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()


def _trajectory(cls, kwargs, schedule, seed=0):
    """Params after STEPS steps; ``schedule`` says fused or not for each half, with a
    state_dict save and load into a fresh optimizer between the halves."""
    params = _params()
    gen = torch.Generator().manual_seed(seed + 1)
    opt = cls(params, lr=1e-2, fused=schedule[0], **kwargs)
    _run(opt, params, gen, STEPS // 2)
    if schedule[1] != schedule[0]:
        saved = copy.deepcopy(opt.state_dict())
        opt = cls(params, lr=1e-2, fused=schedule[1], **kwargs)
        opt.load_state_dict(saved)
        assert opt.param_groups[0]["fused"] == schedule[1]
    _run(opt, params, gen, STEPS - STEPS // 2)
    return params, opt


def _assert_same_state(opt, ref, params, ref_params):
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, q)
        state, expected = opt.state[p], ref.state[q]
        assert set(state) == set(expected)
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert state[key].dtype == value.dtype, key
                torch.testing.assert_close(state[key], value, msg=key)
            elif value is None:
                assert state[key] is None, key
            else:
                assert state[key] == pytest.approx(value, rel=1e-12), key
        torch.testing.assert_close(opt.inverse_lr(p), ref.inverse_lr(q))
        v, v_hat = opt.second_moment(p)
        v_ref, v_hat_ref = ref.second_moment(q)
        torch.testing.assert_close(v, v_ref)
        assert (v_hat is None) == (v_hat_ref is None)


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
def test_fused_equals_eager(cls, kwargs):
    ref_params, ref = _trajectory(cls, kwargs, (False, False))
    params, opt = _trajectory(cls, kwargs, (True, True))
    _assert_same_state(opt, ref, params, ref_params)
    assert opt.state_dict()["state"].keys() == ref.state_dict()["state"].keys()


@pytest.mark.parametrize(("cls", "kwargs"), FAMILY, ids=IDS)
@pytest.mark.parametrize("schedule", [(True, False), (False, True)], ids=["to-eager", "to-fused"])
def test_state_dict_moves_between_fused_and_eager(cls, kwargs, schedule):
    ref_params, ref = _trajectory(cls, kwargs, (False, False))
    params, opt = _trajectory(cls, kwargs, schedule)
    _assert_same_state(opt, ref, params, ref_params)


@pytest.mark.parametrize("cls", [AMSGrad, AdaShift])
def test_param_groups_with_their_own_hyperparameters(cls):
    extra = dict(n=3) if cls is AdaShift else dict(bias_correction="pytorch")
    runs = []
    for is_fused in (False, True):
        params = _params()
        groups = [
            dict(params=params[:2]),
            dict(params=params[2:], lr=0.1, betas=(0.5, 0.9), weight_decay=0.01),
        ]
        opt = cls(groups, lr=1e-2, fused=is_fused, **extra)
        _run(opt, params, torch.Generator().manual_seed(1), STEPS)
        runs.append((params, opt))
    (ref_params, ref), (params, opt) = runs
    _assert_same_state(opt, ref, params, ref_params)


def test_parameters_at_different_steps():
    """A parameter without a gradient skips the step: its t lags and it gets its own kernel
    call with its own scalars."""
    runs = []
    for is_fused in (False, True):
        params = _params()
        opt = AMSGrad(params, lr=1e-2, fused=is_fused, bias_correction="pytorch")
        gen = torch.Generator().manual_seed(1)
        for step in range(20):
            for i, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=gen) if i or step % 3 else None
            opt.step()
        runs.append((params, opt))
    (ref_params, ref), (params, opt) = runs
    assert opt.state[params[0]]["step"] < opt.state[params[1]]["step"]
    _assert_same_state(opt, ref, params, ref_params)


@pytest.fixture
def compiles(monkeypatch):
    """Counts the kernels traced and compiled from here on."""
    calls = []
    compile_kernel = torch._inductor.compile

    def counted(*args, **kwargs):
        calls.append(args)
        return compile_kernel(*args, **kwargs)

    monkeypatch.setattr(torch._inductor, "compile", counted)
    return calls


def test_no_recompile_when_lr_and_t_change(compiles):
    """A scheduler moves lr every step and t advances: one compile for the whole run."""
    shapes = [(7, 2), (3,)]  # shapes no other test uses: this test pays its own compile
    params = [torch.randn(s).requires_grad_(True) for s in shapes]
    opt = AMSGrad(params, lr=1e-2, fused=True, lr_schedule="inv_sqrt", bias_correction="pytorch")
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch)
    gen = torch.Generator().manual_seed(0)
    _run(opt, params, gen, 1)
    scheduler.step()
    assert opt.compile_seconds > 0
    assert len(compiles) == 1
    compiled, first_compile = dict(fused.COMPILE_SECONDS), opt.compile_seconds
    for _ in range(30):
        _run(opt, params, gen, 1)
        scheduler.step()
    assert opt.param_groups[0]["lr"] < 1e-2 * 0.9**29
    assert compiled == fused.COMPILE_SECONDS
    assert len(compiles) == 1
    assert opt.compile_seconds == first_compile
    assert opt.state[params[0]]["step"] == 31
    # a second optimizer with the same signature reuses the kernel: nothing to compile
    again = AMSGrad(params, lr=5e-3, fused=True, lr_schedule="inv_sqrt", bias_correction="pytorch")
    _run(again, params, gen, 3)
    assert again.compile_seconds == 0.0
    assert len(compiles) == 1


def test_a_changed_layout_compiles_a_kernel_for_it(compiles):
    """The kernel is looked up by the parameters' identity; when a gradient arrives with other
    strides, or a parameter's storage is swapped for one laid out differently, the kernel's
    entry check notices before it writes and the step runs a kernel built for the new layout.
    """
    shapes = [(5, 6), (6,)]  # this test's own shapes: it counts its own compiles
    runs = []
    for is_fused in (False, True):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
        opt = AMSGrad(params, lr=1e-2, fused=is_fused, bias_correction="pytorch")
        for step in range(9):
            grads = [torch.randn(p.shape, generator=gen) for p in params]
            if step >= 3:  # the matrix's gradient now arrives transposed in memory
                grads[0] = grads[0].t().contiguous().t()
            if step == 6:  # the matrix's storage becomes column-major (same values)
                params[0].data = params[0].data.t().contiguous().t()
                state = opt.state[params[0]]
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    state[key] = state[key].t().contiguous().t()
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
        runs.append((params, opt))
    (ref_params, ref), (params, opt) = runs
    assert not params[0].grad.is_contiguous() and not params[0].is_contiguous()
    _assert_same_state(opt, ref, params, ref_params)
    assert len(compiles) == 3  # contiguous, transposed gradient, transposed everything


def test_steps_are_counted_once_per_step():
    """On CPU the kernel increments the step counters; every parameter counts each step once,
    including one that skipped steps and so runs in a kernel call of its own."""
    params = _params()
    opt = AMSGrad(params, lr=1e-2, fused=True)
    gen = torch.Generator().manual_seed(3)
    for step in range(7):
        for i, p in enumerate(params):
            p.grad = None if (i == 0 and step % 2) else torch.randn(p.shape, generator=gen)
        opt.step()
    assert [opt.state[p]["step"].item() for p in params] == [4.0, 7.0, 7.0]
    assert all(opt.state[p]["step"].dtype == torch.float32 for p in params)


def test_grad_scaler_unscales_before_the_fused_step():
    """AMP: GradScaler unscales p.grad in place, then calls step(), which reads p.grad."""
    runs = []
    for is_fused in (False, True):
        params = _params()
        opt = AMSGrad(params, lr=1e-2, fused=is_fused, weight_decay=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        gen = torch.Generator().manual_seed(1)
        for _ in range(10):
            opt.zero_grad()
            targets = [torch.randn(p.shape, generator=gen) for p in params]
            loss = sum(((p - y) ** 2).sum() for p, y in zip(params, targets, strict=True))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        runs.append((params, opt))
    (ref_params, ref), (params, opt) = runs
    _assert_same_state(opt, ref, params, ref_params)


def test_foreach_true_and_a_bad_fused_flag_are_refused():
    """There is one eager step (tensor by tensor) and one multi-tensor step (fused)."""
    with pytest.raises(ValueError, match="foreach must be None or False .*fused=True"):
        Adam(_params(), foreach=True)
    with pytest.raises(ValueError, match="fused"):
        Adam(_params(), fused="yes")


@pytest.mark.slow
@pytest.mark.parametrize("cls", [AMSGrad, AdaShift])
def test_bfloat16_fused_tracks_eager(cls):
    """bf16 state: the kernel keeps float32 intermediates, eager rounds after every op."""
    runs = []
    for is_fused in (False, True):
        params = [p.detach().to(torch.bfloat16).requires_grad_(True) for p in _params()]
        opt = cls(params, lr=1e-3, fused=is_fused)
        gen = torch.Generator().manual_seed(1)
        for _ in range(30):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(torch.bfloat16)
            opt.step()
        runs.append(params)
    for p, q in zip(*runs, strict=True):
        assert p.dtype == torch.bfloat16
        torch.testing.assert_close(p, q, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("is_fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("block", ["tensor", "row"])
def test_adashift_state_saved_without_the_stored_squares_resumes(is_fused, block):
    """``grad_queue_sq_max`` (phi(g^2) per window slot) is rebuilt from the window when a
    state saved before it was kept is loaded; the run goes on as if never interrupted."""
    ref_params, ref = _trajectory(AdaShift, dict(n=3, block=block), (False, False))
    params = _params()
    gen = torch.Generator().manual_seed(1)
    opt = AdaShift(params, lr=1e-2, n=3, block=block, fused=is_fused)
    _run(opt, params, gen, STEPS // 2)
    saved = copy.deepcopy(opt.state_dict())
    dropped = [state.pop("grad_queue_sq_max", None) for state in saved["state"].values()]
    kept = [d is not None and d.shape[0] == 3 for d in dropped]
    # what reduces stores its squares: not the 0-dim parameter, nor the 1-D one in row blocks
    # (each of its elements is a row of its own)
    assert kept == [True, block == "tensor", False]
    opt = AdaShift(params, lr=1e-2, n=3, block=block, fused=is_fused)
    opt.load_state_dict(saved)
    _run(opt, params, gen, STEPS - STEPS // 2)
    _assert_same_state(opt, ref, params, ref_params)


def test_a_second_process_reuses_the_compiled_kernel(tmp_path):
    """Inductor's FX graph cache serves the next process (it is bypassed for graphs traced
    without a ShapeEnv, which once made every run compile from scratch)."""
    code = (
        "import torch\n"
        "from torch._dynamo.utils import counters\n"
        "from lit_amsgrad.optim import AMSGrad\n"
        "params = [torch.randn(11, 3).requires_grad_(True), torch.randn(3).requires_grad_(True)]\n"
        "for p in params: p.grad = torch.randn_like(p)\n"
        "AMSGrad(params, fused=True).step()\n"
        "print(dict(counters['inductor']))\n"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    runs = [
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr[-2000:]
    first, second = (run.stdout.strip().splitlines()[-1] for run in runs)
    assert "'fxgraph_cache_miss': 1" in first
    assert "'fxgraph_cache_hit': 1" in second


def _loops_generated(monkeypatch, cls, kwargs, shapes, options):
    """Vectorized loops in the C++ that inductor generates for the fused step under
    ``options``, compiled afresh (kernel caches and the FX graph cache bypassed)."""
    from torch._inductor import metrics

    monkeypatch.setattr(fused, "inductor_options", lambda: options)
    monkeypatch.setattr(fused, "_KERNELS", {})
    monkeypatch.setattr(fused, "_BY_PARAMS", {})
    params = [torch.randn(s).requires_grad_(True) for s in shapes]
    opt = cls(params, fused=True, **kwargs)
    gen = torch.Generator().manual_seed(0)
    metrics.reset()
    with torch._inductor.config.patch(fx_graph_cache=False):
        _run(opt, params, gen, 1)
    assert opt.compile_seconds > 0
    return metrics.generated_cpp_vec_kernel_count


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(AMSGrad, {}), (AdaShift, dict(n=2, block="tensor")), (AdaShift, dict(n=2, block="row"))],
    ids=["AMSGrad", "AdaShift-tensor", "AdaShift-row"],
)
def test_each_tensor_is_streamed_by_one_loop(monkeypatch, cls, kwargs):
    """No loop streams two tensors' buffers at once (inductor's default for same-sized
    tensors, slower here), and AdaShift takes the max of g^2 that its window stores inside
    the tensor's update loop, not in a second loop that reads g again: one loop fewer per
    tensor than inductor makes without :class:`fusion_choices.OneLoopPerTensor`."""
    shapes = [(9, 16), (9, 16), (9, 16)]  # same-sized tensors: candidates for one loop
    ours = _loops_generated(monkeypatch, cls, kwargs, shapes, fused.inductor_options())
    separate = {"size_asserts": True, "cpp.max_horizontal_fusion_size": 1}
    apart = _loops_generated(monkeypatch, cls, kwargs, shapes, separate)
    reductions = len(shapes) if cls is AdaShift else 0
    assert ours == apart - reductions
    if kwargs.get("block", "tensor") == "tensor":  # row blocks add small per-row loops
        assert ours == len(shapes)


def test_the_fusion_rule_holds_after_another_compile_in_the_thread(monkeypatch):
    """Inductor reads ``inductor_choices_class`` once per thread, at its first compile: a
    ``torch.compile`` of the model before the first fused step (the usual order) left the step
    with inductor's default fusion, two tensors streamed by one loop, and the FX graph cache
    kept that kernel under the key of our rule."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.virtualized import V

    shapes = [(9, 16), (9, 16), (9, 16)]
    default = InductorChoices()
    with V.set_choices_handler(default):  # what a compile before ours leaves in the thread
        loops = _loops_generated(monkeypatch, AMSGrad, {}, shapes, fused.inductor_options())
        assert V.choices is default
    assert loops == len(shapes)


def test_the_fusion_rule_does_not_stay_for_the_next_compile(monkeypatch):
    """The fused step's first compile in a thread no longer leaves its fusion rule as that
    thread's choices for every later compile (the user's model's)."""
    import threading

    from torch._inductor.virtualized import V

    from lit_amsgrad.optim.fusion_choices import OneLoopPerTensor

    left: list[object] = []

    def first_compile_in_a_new_thread():
        _loops_generated(monkeypatch, AMSGrad, {}, [(9, 16)], fused.inductor_options())
        left.append(V.choices)

    thread = threading.Thread(target=first_compile_in_a_new_thread)
    thread.start()
    thread.join()
    assert len(left) == 1 and not isinstance(left[0], OneLoopPerTensor)


def test_float64_fused_step_uses_float64_scalars():
    """float64 parameters get their lr, betas and eps in float64: with float32 scalars the
    fused step would drift from the eager one by float32 round-off (about 1e-8 relative)."""
    trajectories = []
    for is_fused in (False, True):
        gen = torch.Generator().manual_seed(3)
        params = [torch.randn(6, 5, generator=gen, dtype=torch.float64).requires_grad_(True)]
        opt = AMSGrad(params, lr=1e-2, betas=(0.9, 0.99), eps=1e-7, fused=is_fused)
        for _ in range(20):
            params[0].grad = torch.randn(6, 5, generator=gen, dtype=torch.float64)
            opt.step()
        trajectories.append(params[0].detach())
    torch.testing.assert_close(trajectories[1], trajectories[0], rtol=1e-13, atol=1e-15)

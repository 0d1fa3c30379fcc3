"""AdaShift against the authors' TensorFlow code, ported with its math unchanged
(QingruZhang/AdaShift_Release, optimizer_all.py, ``AdaShift._apply_dense``), on random
gradient streams where blocks start at zero gradient; and the zero-gradient guard itself."""

import pytest
import torch

from lit_amsgrad.optim import AdaShift


class AuthorsAdaShift:
    """Their slots g0..g_n, v, z, b2p, one per element; ``pred_g_op`` 'none' (our element
    blocks), 'max' (our tensor blocks) and, our extension, 'row' (max per first-dim slice)."""

    def __init__(self, var, lr, keep_num, beta1, beta2, epsilon, pred_g_op):
        s = torch.tensor([beta1 ** (keep_num - i - 1) for i in range(keep_num)], dtype=var.dtype)
        self.s = s / s.sum()
        self.var, self.lr, self.keep_num = var, lr, keep_num
        self.beta2, self.epsilon, self.pred_g_op = beta2, epsilon, pred_g_op
        self.g = [torch.zeros_like(var) for _ in range(keep_num + 1)]
        self.v, self.z, self.b2p = (torch.zeros_like(var) for _ in range(3))

    def _pred(self, squared):
        if self.pred_g_op == "none":
            return squared
        if self.pred_g_op == "max":
            return squared.max()
        if squared.dim() <= 1:
            return squared
        return squared.amax(dim=tuple(range(1, squared.dim())), keepdim=True)

    def apply_dense(self, grad):
        g, beta2 = self.g, self.beta2
        v_t = self.v * beta2 + self._pred(g[0].square()) * (1 - beta2)
        self.v = v_t.expand_as(self.var).clone()
        g[-1] = grad.clone()
        for i in range(self.keep_num):
            g[i] = g[i + 1]
        m_t = sum(g[i] * self.s[i] for i in range(self.keep_num))
        z_t = torch.logical_or(self.v > 0.0, self.z > 0.0).to(self.var.dtype)
        self.z = z_t
        self.b2p = self.b2p * beta2 * torch.sign(z_t) + (1.0 - torch.sign(z_t))
        b2_fix = torch.clamp(1.0 - self.b2p, min=1e-8)
        step_t = z_t * m_t / (torch.sqrt(self.v / b2_fix) + self.epsilon)
        self.var = self.var - self.lr * step_t


OPS = {"element": "none", "tensor": "max", "row": "row"}


def _stream(shape, steps, gen):
    """Random gradients; some rows (or the whole tensor) are zero for a while at the start,
    one row comes back to zero later, as an embedding row that is used late and rarely."""
    grads = []
    for t in range(steps):
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        if len(shape) > 1:
            g[0] = 0.0 if t < 7 else g[0]  # row 0 starts late
            g[1] = 0.0 if t % 5 else g[1]  # row 1 used every 5th step
        elif t < 4:
            g.zero_()
        grads.append(g)
    return grads


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("block", ["tensor", "row", "element"])
@pytest.mark.parametrize("shape", [(4, 3), (5,)])
def test_equals_the_authors_code(shape, block, n):
    gen = torch.Generator().manual_seed(n)
    grads = _stream(shape, 3 * n + 10, gen)
    start = torch.randn(shape, generator=gen, dtype=torch.float64)
    theirs = AuthorsAdaShift(start.clone(), 0.01, n, 0.9, 0.999, 1e-10, OPS[block])
    param = torch.nn.Parameter(start.clone())
    ours = AdaShift([param], lr=0.01, n=n, block=block, bias_correction="pytorch")
    for g in grads:
        theirs.apply_dense(g)
        param.grad = g.clone()
        ours.step()
        torch.testing.assert_close(param.detach(), theirs.var, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block", ["tensor", "row", "element"])
def test_fused_equals_the_authors_code(block):
    shape, n = (4, 3), 3
    gen = torch.Generator().manual_seed(0)
    grads = _stream(shape, 20, gen)
    start = torch.randn(shape, generator=gen, dtype=torch.float64)
    theirs = AuthorsAdaShift(start.clone(), 0.01, n, 0.9, 0.999, 1e-10, OPS[block])
    param = torch.nn.Parameter(start.clone())
    ours = AdaShift([param], lr=0.01, n=n, block=block, bias_correction="pytorch", fused=True)
    for g in grads:
        theirs.apply_dense(g)
        param.grad = g.clone()
        ours.step()
    torch.testing.assert_close(param.detach(), theirs.var, rtol=1e-10, atol=1e-12)


def test_a_gradient_leaving_the_window_at_zero_takes_no_step():
    """The case that reached -5.3e7: zeros(3), n = 2, gradients 0, 0, 1. At step 3 the
    gradient leaving the window is 0, so v = 0: no step (before, lr * m / eps)."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = AdaShift([p], lr=0.1, n=2, block="element")
    for g in (0.0, 0.0, 1.0):
        p.grad = torch.full((3,), g)
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))
    assert torch.isinf(opt.inverse_lr(p)).all()
    p.grad = torch.ones(3)
    opt.step()  # step 4: g_2 = 0 leaves the window, still no step
    assert torch.equal(p.detach(), torch.zeros(3))
    p.grad = torch.ones(3)
    opt.step()  # step 5: g_3 = 1 leaves, v = (1 - beta_2) * 1, m = 1 (the window holds 1, 1)
    torch.testing.assert_close(p.detach(), torch.full((3,), -0.1 / (1 - 0.999) ** 0.5))


@pytest.mark.parametrize("block", ["tensor", "row", "element"])
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_embedding_rows_first_used_late_stay_finite(block, fused):
    """An nn.Embedding whose rows are first used at different steps (before the guard, a
    row reached 1.2e33 by step 24)."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(12, 4)
    start = emb.weight.detach().clone()
    opt = AdaShift(emb.parameters(), lr=1e-2, n=3, block=block, fused=fused)
    gen = torch.Generator().manual_seed(1)
    for t in range(30):
        rows = torch.randint(0, min(12, 1 + t // 2), (6,), generator=gen)  # new rows join late
        opt.zero_grad()
        emb(rows).square().sum().backward()
        opt.step()
    moved = (emb.weight.detach() - start).abs()
    assert torch.isfinite(emb.weight).all()
    assert moved.max() < 30 * 1e-2 * 5  # a few lr per step at most

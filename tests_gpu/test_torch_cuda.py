"""On a GPU only (skipped under the simulator and without one): fastloss on torch CUDA tensors
and CuPy arrays against torch CUDA itself, float64 and float32, and the interop contract:
the caller's kind of array back, on the caller's device, ordered on the caller's stream."""
import numpy as np
import pytest
from numba import config

import fastloss as fl

torch = pytest.importorskip("torch")
if config.ENABLE_CUDASIM or not torch.cuda.is_available():
    pytest.skip("needs a GPU and torch with CUDA", allow_module_level=True)
F = torch.nn.functional

RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def t(a, dtype=None):
    a = torch.as_tensor(np.asarray(a)).cuda()
    return a.to(dtype) if dtype is not None and a.is_floating_point() else a


def log_softmax(x, dim):
    return torch.log_softmax(x, dim)


# (id, fastloss criterion, torch function of the same tensors, arrays(rng) as NumPy, differentiable indices)
CASES = [
    ("mse", fl.MSELoss(), F.mse_loss, lambda r: [r.standard_normal((64, 33)), r.standard_normal((64, 33))], (0,)),
    ("l1-sum", fl.L1Loss(reduction="sum"), lambda x, y: F.l1_loss(x, y, reduction="sum"),
     lambda r: [r.standard_normal(1000), r.standard_normal(1000)], (0,)),
    ("huber", fl.HuberLoss(delta=0.5), lambda x, y: F.huber_loss(x, y, delta=0.5),
     lambda r: [r.standard_normal((50, 7)), r.standard_normal((50, 7))], (0,)),
    ("bce_with_logits", fl.BCEWithLogitsLoss(pos_weight=np.linspace(1, 2, 7)),
     lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=t(np.linspace(1, 2, 7), x.dtype)),
     lambda r: [r.standard_normal((50, 7)) * 5, r.uniform(0, 1, (50, 7))], (0,)),
    ("poisson", fl.PoissonNLLLoss(), F.poisson_nll_loss, lambda r: [r.standard_normal(300), r.poisson(2.0, 300) * 1.0], (0,)),
    ("gaussian", fl.GaussianNLLLoss(full=True), lambda x, y, v: F.gaussian_nll_loss(x, y, v, full=True),
     lambda r: [r.standard_normal((40, 3)), r.standard_normal((40, 3)), r.uniform(0.1, 2, (40, 3))], (0, 2)),
    ("kl_div", fl.KLDivLoss(reduction="batchmean"), lambda x, y: F.kl_div(x, y, reduction="batchmean"),
     lambda r: [np.log(r.dirichlet(np.ones(9), 30)), r.dirichlet(np.ones(9), 30)], (0,)),
    ("margin_ranking", fl.MarginRankingLoss(margin=0.1), lambda a, b, y: F.margin_ranking_loss(a, b, y, margin=0.1),
     lambda r: [r.standard_normal(200), r.standard_normal(200), r.choice([-1.0, 1.0], 200)], (0, 1)),
    ("ce", fl.CrossEntropyLoss(label_smoothing=0.1), lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1),
     lambda r: [r.standard_normal((300, 1000)), r.integers(0, 1000, 300)], (0,)),
    ("ce-weight-ignore-kdim", fl.CrossEntropyLoss(weight=np.linspace(0.5, 2, 5), ignore_index=1),
     lambda x, y: F.cross_entropy(x, y, weight=t(np.linspace(0.5, 2, 5), x.dtype), ignore_index=1),
     lambda r: [r.standard_normal((4, 5, 3, 2)), r.integers(0, 5, (4, 3, 2))], (0,)),
    ("ce-probabilities", fl.CrossEntropyLoss(), F.cross_entropy,
     lambda r: [r.standard_normal((30, 12)), r.dirichlet(np.ones(12), 30)], (0,)),
    ("nll", fl.NLLLoss(), F.nll_loss, lambda r: [np.log(r.dirichlet(np.ones(6), 20)), r.integers(0, 6, 20)], (0,)),
    ("multi_margin", fl.MultiMarginLoss(p=2), lambda x, y: F.multi_margin_loss(x, y, p=2),
     lambda r: [r.standard_normal((20, 9)), r.integers(0, 9, 20)], (0,)),
    ("multilabel_soft_margin", fl.MultiLabelSoftMarginLoss(), F.multilabel_soft_margin_loss,
     lambda r: [r.standard_normal((20, 9)), r.integers(0, 2, (20, 9)) * 1.0], (0,)),
    ("linear_ce", fl.LinearCrossEntropyLoss(chunk_rows=64),
     lambda x, w, y, b: F.cross_entropy(F.linear(x, w, b), y),
     lambda r: [r.standard_normal((200, 32)), r.standard_normal((500, 32)) * 0.1, r.integers(0, 500, 200),
                r.standard_normal(500)], (0, 1, 3)),
    ("triplet", fl.TripletMarginLoss(p=1.5, swap=True), lambda a, p, n: F.triplet_margin_loss(a, p, n, p=1.5, swap=True),
     lambda r: [r.standard_normal((100, 64)) for _ in range(3)], (0, 1, 2)),
    ("cosine_embedding", fl.CosineEmbeddingLoss(margin=0.2), lambda a, b, y: F.cosine_embedding_loss(a, b, y, margin=0.2),
     lambda r: [r.standard_normal((100, 64)), r.standard_normal((100, 64)), r.choice([-1, 1], 100)], (0, 1)),
    ("ctc", fl.CTCLoss(), lambda lp, tg, il, tl: F.ctc_loss(lp, tg, il, tl),
     lambda r: [np.log(r.dirichlet(np.ones(20), (50, 8))), r.integers(1, 20, (8, 12)), np.full(8, 50),
                r.integers(4, 13, 8)], (0,)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_cuda(case, dtype):
    _, crit, reference, make, differentiable = case
    arrays = [t(a, dtype) for a in make(np.random.default_rng(0))]
    ours = crit(*arrays)
    theirs = [a.clone().requires_grad_(i in differentiable) for i, a in enumerate(arrays)]
    loss = reference(*theirs)
    loss.backward()
    rtol = RTOL[dtype]
    assert torch.is_tensor(ours.loss) and ours.loss.is_cuda and ours.loss.dtype == dtype and ours.loss.ndim == 0
    torch.testing.assert_close(ours.loss, loss.detach(), rtol=rtol, atol=rtol)
    grads = ours.grad if isinstance(ours.grad, tuple) else (ours.grad,)
    for g, i in zip([g for g in grads if g is not None], differentiable):
        assert g.is_cuda and g.dtype == dtype and g.is_contiguous()
        scale = max(1.0, float(theirs[i].grad.abs().max()))
        torch.testing.assert_close(g, theirs[i].grad, rtol=rtol, atol=rtol * scale)


def test_results_are_torch_tensors_on_the_callers_device_and_stream():
    rng = np.random.default_rng(1)
    x, y = t(rng.standard_normal((4096, 1000)), torch.float32), t(rng.integers(0, 1000, 4096))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x2 = x * 2   # queued on the side stream; our kernels must run after it
        loss, grad = fl.CrossEntropyLoss()(x2, y)
        expected = F.cross_entropy(x2, y)
    stream.synchronize()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    out = torch.empty_like(x)
    assert fl.CrossEntropyLoss()(x, y, out=out).grad is out


def test_cupy_arrays_in_and_out():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(2)
    x, y = cupy.asarray(rng.standard_normal((64, 10))), cupy.asarray(rng.standard_normal((64, 10)))
    loss, grad = fl.MSELoss()(x, y)
    assert isinstance(loss, cupy.ndarray) and loss.shape == () and isinstance(grad, cupy.ndarray)
    expected = fl.MSELoss()(cupy.asnumpy(x), cupy.asnumpy(y))
    np.testing.assert_allclose(cupy.asnumpy(loss), expected.loss, rtol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(grad), expected.grad, rtol=1e-12)
    h, w, target = (cupy.asarray(a) for a in (rng.standard_normal((40, 8)), rng.standard_normal((30, 8)),
                                              rng.integers(0, 30, 40)))
    ours = fl.LinearCrossEntropyLoss(chunk_rows=16)(h, w, target)
    expected = fl.LinearCrossEntropyLoss(chunk_rows=16)(*(cupy.asnumpy(a) for a in (h, w, target)))
    for a, b in zip(ours.grad[:2], expected.grad[:2]):
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=1e-10, atol=1e-12)


def test_mixing_host_and_device_arrays_is_an_error():
    with pytest.raises(ValueError, match="all on the host or all on a CUDA device"):
        fl.MSELoss()(t(np.zeros(3)), np.zeros(3))


def test_a_bfloat16_tensor_on_the_gpu_is_a_clear_error():
    x = torch.zeros(3, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(TypeError, match=r"input: expected a float16, float32 or float64 array on the GPU \(bfloat16"):
        fl.MSELoss()(x, x)

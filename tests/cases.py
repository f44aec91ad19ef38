"""The one registry of cases: every criterion with the options that pick its kernel variants,
and a maker of its arrays. The contract tests (tests/test_contract.py: out=, grad_output=,
loss(), errors, empty inputs, determinism over every criterion), the GPU tests
(tests_gpu/test_cuda.py, on the simulator or a GPU) and the GPU compile check
(tests_gpu/compile_check.py) all draw from CASES; a new criterion adds rows here.
`dev` puts a NumPy array where the kernels read it: `TO_DEVICE` (numba's `cuda.to_device`, or
the compile check's stand-in), set by a GPU test module."""
import numpy as np

import fastloss as fl

TO_DEVICE = None   # set by the importer: array -> device array


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def dev(a):
    return TO_DEVICE(np.array(a, order="C"))   # (np.ascontiguousarray makes 0-d arrays 1-d)


def unit(rng, shape):
    return rng.uniform(0.05, 0.95, shape)


def normal(rng, shape):
    return rng.standard_normal(shape)


def signs(rng, shape):
    return rng.choice([-1.0, 1.0], shape)


def log_softmax(x, axis):
    return x - np.log(np.exp(x - x.max(axis, keepdims=True)).sum(axis, keepdims=True)) - x.max(axis, keepdims=True)


def labels(rng, shape, C, ignore=True):
    t = rng.integers(0, C, shape)
    if ignore and t.ndim:
        t.reshape(-1)[0] = -100
    return t


def multilabel(rng, rows, C):
    """MultiLabelMarginLoss targets: each row's classes, a repeated one too, then -1."""
    t = np.full((rows, C), -1)
    for r in range(rows):
        k = rng.integers(0, C)
        t[r, :k] = rng.choice(C, k, replace=False)
    t[0, :3] = [2, 2, 1]
    return t


def soft_distance(x, y):
    """A user's distance for TripletMarginWithDistanceLoss, sqrt(|x - y|^2 + 1e-3), on NumPy
    or numba device arrays (here through the host: the plumbing is under test)."""
    on_device = hasattr(x, "copy_to_host")
    d = np.sqrt(((host(x) - host(y)) ** 2).sum(-1) + 1e-3)
    return dev(d) if on_device else d


def soft_distance_grad(x, y, g):
    gx = (host(g) / np.sqrt(((host(x) - host(y)) ** 2).sum(-1) + 1e-3))[..., None] * (host(x) - host(y))
    return (dev(gx), dev(-gx)) if hasattr(x, "copy_to_host") else (gx, -gx)


S = (4, 5)   # the pointwise cases' input shape
CASES = [   # (id, criterion, arrays(rng, dtype))
    ("l1", fl.L1Loss(), lambda r, d: [normal(r, S), normal(r, S)]),
    ("mse-broadcast", fl.MSELoss(), lambda r, d: [normal(r, S), normal(r, (5,))]),
    ("mse-int-target", fl.MSELoss(), lambda r, d: [normal(r, S), r.integers(-2, 3, S)]),
    ("smooth_l1", fl.SmoothL1Loss(beta=0.5), lambda r, d: [normal(r, S), normal(r, (4, 1))]),
    ("smooth_l1-beta0", fl.SmoothL1Loss(beta=0.0), lambda r, d: [normal(r, S), normal(r, S)]),
    ("huber", fl.HuberLoss(delta=0.3), lambda r, d: [normal(r, S), normal(r, S)]),
    ("soft_margin", fl.SoftMarginLoss(), lambda r, d: [normal(r, S) * 30, signs(r, S)]),
    ("bce-weight", fl.BCELoss(weight=np.linspace(0.5, 2, 5)), lambda r, d: [unit(r, S), unit(r, S)]),
    ("bce_with_logits", fl.BCEWithLogitsLoss(weight=np.linspace(0.5, 2, 5), pos_weight=np.linspace(1, 3, 5)),
     lambda r, d: [normal(r, S) * 20, unit(r, S)]),
    ("poisson", fl.PoissonNLLLoss(), lambda r, d: [normal(r, S), r.poisson(2.0, S).astype(float)]),
    ("poisson-rate-full", fl.PoissonNLLLoss(log_input=False, full=True),
     lambda r, d: [unit(r, S) * 3, r.poisson(2.0, S).astype(float)]),
    ("gaussian-var-full", fl.GaussianNLLLoss(full=True), lambda r, d: [normal(r, S), normal(r, S), unit(r, S)]),
    ("gaussian-var-rows", fl.GaussianNLLLoss(), lambda r, d: [normal(r, S), normal(r, S), unit(r, (4,))]),
    ("gaussian-var-slab", fl.GaussianNLLLoss(eps=0.1), lambda r, d: [normal(r, S), normal(r, S), unit(r, (1, 5))]),
    ("gaussian-var-float", fl.GaussianNLLLoss(), lambda r, d: [normal(r, S), normal(r, S), 0.7]),
    ("kl_div", fl.KLDivLoss(reduction="batchmean"),
     lambda r, d: [log_softmax(normal(r, S), 1), np.where(r.random(S) < 0.2, 0.0, unit(r, S))]),
    ("kl_div-log_target", fl.KLDivLoss(log_target=True), lambda r, d: [normal(r, S), normal(r, S)]),
    ("hinge_embedding", fl.HingeEmbeddingLoss(margin=0.5), lambda r, d: [normal(r, S), signs(r, S)]),
    ("margin_ranking", fl.MarginRankingLoss(margin=0.2), lambda r, d: [normal(r, S), normal(r, S), signs(r, S)]),
    ("sigmoid_focal", fl.SigmoidFocalLoss(), lambda r, d: [normal(r, S), unit(r, S)]),
    ("sigmoid_focal-gamma", fl.SigmoidFocalLoss(alpha=-1, gamma=1.5), lambda r, d: [normal(r, S), unit(r, S)]),
    ("pinball", fl.PinballLoss(0.3), lambda r, d: [normal(r, S), normal(r, S)]),
    ("pinball-quantiles-rows", fl.QuantileLoss([0.05, 0.25, 0.5, 0.75, 0.95]),
     lambda r, d: [normal(r, S), normal(r, (4,))]),
    ("pseudo_huber", fl.PseudoHuberLoss(delta=0.7), lambda r, d: [normal(r, S) * 3, normal(r, S)]),
    ("log_cosh", fl.LogCoshLoss(), lambda r, d: [normal(r, S) * 3, normal(r, (5,))]),
    ("tweedie", fl.TweedieLoss(power=1.3), lambda r, d: [normal(r, S), r.poisson(1.0, S) * unit(r, S) * 3]),
    ("gamma", fl.GammaLoss(), lambda r, d: [normal(r, S), unit(r, S) * 3]),
    ("exponential", fl.ExponentialLoss(), lambda r, d: [normal(r, S), r.integers(0, 2, S) * 1.0]),
    ("ce", fl.CrossEntropyLoss(), lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("ce-weight-smoothing", fl.CrossEntropyLoss(weight=np.linspace(0.5, 2, 5), label_smoothing=0.1),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("ce-kdim-zloss-softcap", fl.CrossEntropyLoss(z_loss=1e-2, softcap=2.0),
     lambda r, d: [normal(r, (3, 5, 2, 2)), labels(r, (3, 2, 2), 5)]),
    ("ce-probabilities", fl.CrossEntropyLoss(label_smoothing=0.2, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (4, 5, 3)), np.moveaxis(r.dirichlet(np.ones(5), (4, 3)), -1, 1)]),
    ("ce-one-row", fl.CrossEntropyLoss(), lambda r, d: [normal(r, (5,)), np.array(3)]),
    ("ce-narrow-rows", fl.CrossEntropyLoss(label_smoothing=0.3), lambda r, d: [normal(r, (9, 1)), np.zeros(9, int)]),
    ("softmax_focal", fl.SoftmaxFocalLoss(gamma=1.5, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5)]),
    ("nll", fl.NLLLoss(weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [log_softmax(normal(r, (3, 5, 2)), 1), labels(r, (3, 2), 5)]),
    ("multi_margin-p2-weight", fl.MultiMarginLoss(p=2, margin=0.7, weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (6, 5)), labels(r, (6,), 5, ignore=False)]),
    ("multi_margin-0d", fl.MultiMarginLoss(margin=0.5), lambda r, d: [normal(r, ()), np.array(0)]),
    ("multilabel_margin", fl.MultiLabelMarginLoss(), lambda r, d: [normal(r, (4, 5)), multilabel(r, 4, 5)]),
    ("multilabel_soft_margin", fl.MultiLabelSoftMarginLoss(weight=np.linspace(0.5, 2, 5)),
     lambda r, d: [normal(r, (4, 5)), unit(r, (4, 5))]),
    ("dice-multiclass-ignore", fl.DiceLoss("multiclass", ignore_index=-100, smooth=0.5),
     lambda r, d: [normal(r, (2, 3, 2, 3)), labels(r, (2, 2, 3), 3)]),
    ("dice-multilabel", fl.DiceLoss("multilabel"), lambda r, d: [normal(r, (2, 3, 5)), r.integers(0, 2, (2, 3, 5)) * 1.0]),
    ("dice-binary-probabilities", fl.DiceLoss("binary", from_logits=False),
     lambda r, d: [unit(r, (3, 1, 4)), r.integers(0, 2, (3, 1, 4)) * 1.0]),
    ("linear_ce-bias-chunks", fl.LinearCrossEntropyLoss(label_smoothing=0.1, chunk_rows=2),
     lambda r, d: [normal(r, (5, 3)), normal(r, (6, 3)), labels(r, (5,), 6), normal(r, (6,))]),
    ("linear_ce-probabilities", fl.LinearCrossEntropyLoss(weight=np.linspace(0.5, 2, 4)),
     lambda r, d: [normal(r, (3, 2)), normal(r, (4, 2)), r.dirichlet(np.ones(4), 3), None]),
    ("nt_xent-chunks", fl.NTXentLoss(temperature=0.3, chunk_rows=2), lambda r, d: [normal(r, (3, 4)), normal(r, (3, 4))]),
    ("triplet-callable-swap", fl.TripletMarginWithDistanceLoss(distance_function=(soft_distance, soft_distance_grad),
                                                               swap=True, margin=1.5),
     lambda r, d: [normal(r, (5, 4)) for _ in range(3)]),
    ("triplet", fl.TripletMarginLoss(margin=2.0), lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("triplet-p-swap", fl.TripletMarginLoss(p=1.5, swap=True, margin=2.0), lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("triplet-cosine", fl.TripletMarginWithDistanceLoss(distance_function="cosine", swap=True),
     lambda r, d: [normal(r, (5, 7)) for _ in range(3)]),
    ("cosine_embedding", fl.CosineEmbeddingLoss(margin=0.1), lambda r, d: [normal(r, (5, 7)), normal(r, (5, 7)), signs(r, 5)]),
    ("contrastive", fl.ContrastiveLoss(margin=4.0), lambda r, d: [normal(r, (5, 7)), normal(r, (5, 7)), r.integers(0, 2, 5)]),
    ("ctc-padded", fl.CTCLoss(), lambda r, d: [log_softmax(normal(r, (6, 3, 5)), 2), r.integers(1, 5, (3, 3)),
                                               np.array([6, 5, 4]), np.array([3, 2, 0])]),
    ("ctc-concatenated-zero_infinity", fl.CTCLoss(blank=4, zero_infinity=True),
     lambda r, d: [log_softmax(normal(r, (5, 3, 5)), 2), r.integers(0, 4, 6), np.array([5, 1, 4]), np.array([2, 3, 1])]),
]
IDS = [c[0] for c in CASES]
HOST_ARGUMENTS = {"input_lengths", "target_lengths"}   # CTC's lengths stay on the host


def build(case, reduction, dtype, seed=0):
    name, crit, make = case
    crit = crit._with_reduction(reduction)
    rng = np.random.default_rng(seed)
    arrays = make(rng, dtype)
    arrays = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in arrays]
    if TO_DEVICE is None:
        return crit, arrays, None
    on_device = [a if a is None or isinstance(a, float) or name in HOST_ARGUMENTS else dev(a)
                 for a, name in zip(arrays, crit.arguments)]
    return crit, arrays, on_device


CRITERIA = {type(case[1]).__name__ for case in CASES}   # every criterion the registry covers


# ---------------------------------------------------------------- torch float64 references
# ORACLES[id](*tensors, reduction) -> the torch loss of that case: float arrays arrive as
# float64 tensors (the differentiable ones requiring grad), integer arrays as int64 tensors,
# None and floats as they are. The family test files run their cases against these (see
# conftest.registry_parity); losses torch lacks are written out from their definitions.
def _torch():
    import torch
    return torch, torch.nn.functional


def _reduce(loss, reduction, divisor=None):
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / (loss.numel() if divisor is None else divisor)


def sigmoid_focal_reference(x, y, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss, written out (torchvision is not a test dependency)."""
    torch, F = _torch()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _reduce(loss, reduction)


def regression_reference(name, x, y, reduction, **options):
    """The regression objectives written out from their definitions (torch has none of them);
    `name` is the criterion's kernel. Pinball's gradient at y = x is -q, as scikit-learn's;
    a zero coefficient times an infinite exponential is 0, the limit (not torch's 0 * inf)."""
    torch, _ = _torch()

    def times(c, e):
        return torch.where(c == 0, torch.zeros_like(e), c * e)
    y = y.to(x.dtype).expand_as(x) if y.dim() < x.dim() else y.to(x.dtype)
    if name == "pinball":
        q = torch.as_tensor(options["quantile"], dtype=x.dtype)
        loss = torch.where(y >= x, q * (y - x), (1 - q) * (x - y))
    elif name == "pseudo_huber":
        delta = options.get("delta", 1.0)
        loss = delta ** 2 * (torch.sqrt(1 + ((x - y) / delta) ** 2) - 1)
    elif name == "log_cosh":
        loss = torch.log(torch.cosh(x - y))
    elif name == "tweedie":
        p = options.get("power", 1.5)
        loss = times(y, torch.exp((1 - p) * x)) / (p - 1) + torch.exp((2 - p) * x) / (2 - p)
    elif name == "gamma":
        loss = x + times(y, torch.exp(-x))
    else:   # exponential
        loss = times(y, torch.exp(-x)) + times(1 - y, torch.exp(x))
    return _reduce(loss, reduction)


def _z_loss_softcap(x, t, reduction, z_loss, softcap):
    torch, F = _torch()
    z = softcap * torch.tanh(x / softcap)
    kept = (t != -100)
    ce = F.cross_entropy(z, t, reduction="none")
    zl = z_loss * torch.logsumexp(z, dim=1) ** 2 * kept
    if reduction == "none":
        return ce + zl
    if reduction == "sum":
        return ce.sum() + zl.sum()
    return ce.sum() / kept.sum() + zl.sum() / kept.sum()


def _softmax_focal(x, t, reduction, gamma, weight):
    torch, F = _torch()
    kept = t != -100
    safe = t.clamp(min=0)
    log_pt = F.log_softmax(x, dim=1).gather(1, safe[:, None])[:, 0]
    w_t = weight[safe] * kept
    loss = -w_t * (1 - log_pt.exp()) ** gamma * log_pt
    return _reduce(loss, reduction, w_t.sum())


def _dice(x, target, reduction, mode, from_logits=True, smooth=0.0, eps=1e-7, ignore_index=None):
    torch, F = _torch()
    if mode == "multiclass":
        p = x.softmax(dim=1) if from_logits else x
        mask = (target != ignore_index) if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        y = F.one_hot(target.clamp(min=0), x.shape[1]).movedim(-1, 1).to(x.dtype)
        mask = mask[:, None].to(x.dtype)
    else:
        p = x.sigmoid() if from_logits else x
        y = target.to(x.dtype)
        mask = (y != ignore_index).to(x.dtype) if ignore_index is not None else torch.ones_like(y)
    p, y = (p * mask).transpose(0, 1).reshape(x.shape[1], -1), (y * mask).transpose(0, 1).reshape(x.shape[1], -1)
    inner, total = (p * y).sum(1), (p + y).sum(1)
    dice = (2 * inner + smooth) / (total + smooth).clamp_min(eps)
    return _reduce((1 - dice) * (y.sum(1) > 0), reduction)


def _nt_xent(z1, z2, reduction, temperature):
    torch, F = _torch()
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
    s = z @ z.T / temperature
    M = z.shape[0]
    s = s.masked_fill(torch.eye(M, dtype=torch.bool), -torch.inf)
    positives = (torch.arange(M) + M // 2) % M
    return _reduce(-s[torch.arange(M), positives] + torch.logsumexp(s, dim=1), reduction)


def _contrastive(x1, x2, y, reduction, margin):
    d = (x1 - x2).norm(dim=1)
    y = y.to(x1.dtype)
    return _reduce(y * d ** 2 + (1 - y) * (margin - d).clamp_min(0) ** 2, reduction)


def _soft_distance_torch(x, y):
    return (((x - y) ** 2).sum(-1) + 1e-3).sqrt()


def _oracles():
    torch, F = _torch()
    W5, W4 = torch.tensor(np.linspace(0.5, 2, 5)), torch.tensor(np.linspace(0.5, 2, 4))
    P5 = torch.tensor(np.linspace(1, 3, 5))
    return {
        "l1": lambda x, y, reduction: F.l1_loss(x, y, reduction=reduction),
        "mse-broadcast": lambda x, y, reduction: F.mse_loss(x, y.expand_as(x), reduction=reduction),
        "mse-int-target": lambda x, y, reduction: F.mse_loss(x, y.to(x.dtype), reduction=reduction),
        "smooth_l1": lambda x, y, reduction: F.smooth_l1_loss(x, y.expand_as(x), reduction=reduction, beta=0.5),
        "smooth_l1-beta0": lambda x, y, reduction: F.smooth_l1_loss(x, y, reduction=reduction, beta=0.0),
        "huber": lambda x, y, reduction: F.huber_loss(x, y, reduction=reduction, delta=0.3),
        "soft_margin": lambda x, y, reduction: F.soft_margin_loss(x, y, reduction=reduction),
        "bce-weight": lambda x, y, reduction: F.binary_cross_entropy(x, y, weight=W5.to(x.dtype), reduction=reduction),
        "bce_with_logits": lambda x, y, reduction: F.binary_cross_entropy_with_logits(
            x, y, weight=W5.to(x.dtype), pos_weight=P5.to(x.dtype), reduction=reduction),
        "poisson": lambda x, y, reduction: F.poisson_nll_loss(x, y, reduction=reduction),
        "poisson-rate-full": lambda x, y, reduction: F.poisson_nll_loss(x, y, log_input=False, full=True,
                                                                        reduction=reduction),
        "gaussian-var-full": lambda x, y, v, reduction: F.gaussian_nll_loss(x, y, v, full=True, reduction=reduction),
        "gaussian-var-rows": lambda x, y, v, reduction: F.gaussian_nll_loss(x, y, v, reduction=reduction),
        "gaussian-var-slab": lambda x, y, v, reduction: F.gaussian_nll_loss(x, y, v, eps=0.1, reduction=reduction),
        "gaussian-var-float": lambda x, y, v, reduction: F.gaussian_nll_loss(x, y, torch.full_like(x, v),
                                                                             reduction=reduction),
        "kl_div": lambda x, y, reduction: F.kl_div(x, y, reduction=reduction),
        "kl_div-log_target": lambda x, y, reduction: F.kl_div(x, y, reduction=reduction, log_target=True),
        "hinge_embedding": lambda x, y, reduction: F.hinge_embedding_loss(x, y, margin=0.5, reduction=reduction),
        "margin_ranking": lambda a, b, y, reduction: F.margin_ranking_loss(a, b, y, margin=0.2, reduction=reduction),
        "sigmoid_focal": lambda x, y, reduction: sigmoid_focal_reference(x, y, 0.25, 2.0, reduction),
        "sigmoid_focal-gamma": lambda x, y, reduction: sigmoid_focal_reference(x, y, -1, 1.5, reduction),
        "pinball": lambda x, y, reduction: regression_reference("pinball", x, y, reduction, quantile=0.3),
        "pinball-quantiles-rows": lambda x, y, reduction: regression_reference(
            "pinball", x, y[:, None], reduction, quantile=[0.05, 0.25, 0.5, 0.75, 0.95]),
        "pseudo_huber": lambda x, y, reduction: regression_reference("pseudo_huber", x, y, reduction, delta=0.7),
        "log_cosh": lambda x, y, reduction: regression_reference("log_cosh", x, y, reduction),
        "tweedie": lambda x, y, reduction: regression_reference("tweedie", x, y, reduction, power=1.3),
        "gamma": lambda x, y, reduction: regression_reference("gamma", x, y, reduction),
        "exponential": lambda x, y, reduction: regression_reference("exponential", x, y, reduction),
        "ce": lambda x, t, reduction: F.cross_entropy(x, t, reduction=reduction),
        "ce-weight-smoothing": lambda x, t, reduction: F.cross_entropy(x, t, weight=W5.to(x.dtype), label_smoothing=0.1,
                                                                       reduction=reduction),
        "ce-kdim-zloss-softcap": lambda x, t, reduction: _z_loss_softcap(x, t, reduction, 1e-2, 2.0),
        "ce-probabilities": lambda x, p, reduction: F.cross_entropy(x, p, weight=W5.to(x.dtype), label_smoothing=0.2,
                                                                    reduction=reduction),
        "ce-one-row": lambda x, t, reduction: F.cross_entropy(x, t, reduction=reduction),
        "ce-narrow-rows": lambda x, t, reduction: F.cross_entropy(x, t, label_smoothing=0.3, reduction=reduction),
        "softmax_focal": lambda x, t, reduction: _softmax_focal(x, t, reduction, 1.5, W5.to(x.dtype)),
        "nll": lambda x, t, reduction: F.nll_loss(x, t, weight=W5.to(x.dtype), reduction=reduction),
        "multi_margin-p2-weight": lambda x, t, reduction: F.multi_margin_loss(x, t, p=2, margin=0.7, weight=W5.to(x.dtype),
                                                                              reduction=reduction),
        "multi_margin-0d": lambda x, t, reduction: F.multi_margin_loss(x, t, margin=0.5, reduction=reduction),
        "multilabel_margin": lambda x, t, reduction: F.multilabel_margin_loss(x, t, reduction=reduction),
        "multilabel_soft_margin": lambda x, y, reduction: F.multilabel_soft_margin_loss(x, y, weight=W5.to(x.dtype),
                                                                                        reduction=reduction),
        "dice-multiclass-ignore": lambda x, t, reduction: _dice(x, t, reduction, "multiclass", smooth=0.5,
                                                                ignore_index=-100),
        "dice-multilabel": lambda x, y, reduction: _dice(x, y, reduction, "multilabel"),
        "dice-binary-probabilities": lambda x, y, reduction: _dice(x, y, reduction, "binary", from_logits=False),
        "linear_ce-bias-chunks": lambda x, w, t, b, reduction: F.cross_entropy(x @ w.T + b, t, label_smoothing=0.1,
                                                                               reduction=reduction),
        "linear_ce-probabilities": lambda x, w, p, b, reduction: F.cross_entropy(x @ w.T, p, weight=W4.to(x.dtype),
                                                                                 reduction=reduction),
        "nt_xent-chunks": lambda z1, z2, reduction: _nt_xent(z1, z2, reduction, 0.3),
        "triplet-callable-swap": lambda a, p, n, reduction: F.triplet_margin_with_distance_loss(
            a, p, n, distance_function=_soft_distance_torch, margin=1.5, swap=True, reduction=reduction),
        "triplet": lambda a, p, n, reduction: F.triplet_margin_loss(a, p, n, margin=2.0, reduction=reduction),
        "triplet-p-swap": lambda a, p, n, reduction: F.triplet_margin_loss(a, p, n, p=1.5, swap=True, margin=2.0,
                                                                           reduction=reduction),
        "triplet-cosine": lambda a, p, n, reduction: F.triplet_margin_with_distance_loss(
            a, p, n, distance_function=lambda x, y: 1 - F.cosine_similarity(x, y), swap=True, reduction=reduction),
        "cosine_embedding": lambda a, b, y, reduction: F.cosine_embedding_loss(a, b, y, margin=0.1,
                                                                               reduction=reduction),
        "contrastive": lambda a, b, y, reduction: _contrastive(a, b, y, reduction, 4.0),
        "ctc-padded": lambda lp, t, il, tl, reduction: F.ctc_loss(lp, t, il, tl, reduction=reduction),
        "ctc-concatenated-zero_infinity": lambda lp, t, il, tl, reduction: F.ctc_loss(
            lp, t, il, tl, blank=4, zero_infinity=True, reduction=reduction),
    }


def oracle(case_id):
    """The torch reference of a case (see _oracles)."""
    return _oracles()[case_id]


def family(case):
    """The family a case's criterion belongs to: 'pointwise', 'softmax', 'embedding' or 'sequence'."""
    return type(case[1]).__module__.rsplit(".", 1)[-1]


def of_family(name):
    return [case for case in CASES if family(case) == name]

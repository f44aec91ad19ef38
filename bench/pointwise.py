"""Benchmark cases of the pointwise family: every loss, with its torch and NumPy fwd+bwd."""
import numpy as np

import fastloss as fl

from .harness import Case, torch

if torch is not None:
    F = torch.nn.functional


def _normal(rng, n):
    return rng.standard_normal(n, dtype=np.float32)


def _binary(rng, n):
    return (rng.random(n, dtype=np.float32) > 0.5).astype(np.float32)


def _signs(rng, n):
    return np.where(rng.random(n, dtype=np.float32) > 0.5, 1, -1).astype(np.float32)


def _tweedie_targets(rng, n):
    return (rng.poisson(1.0, n) * rng.gamma(2.0, 0.5, n)).astype(np.float32)


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def _np_mean(loss, grad):
    n = max(loss.size, 1)
    return loss.mean(dtype=np.float64), grad / np.float32(n)


# NumPy fwd+bwd, written the way a NumPy user would (mean reduction)
def np_l1(x, y):
    d = x - y
    return _np_mean(np.abs(d), np.sign(d))


def np_mse(x, y):
    d = x - y
    return _np_mean(d * d, 2 * d)


def np_smooth_l1(x, y, beta=1.0):
    d = x - y
    a = np.abs(d)
    small = a < beta
    return _np_mean(np.where(small, 0.5 * d * d / beta, a - 0.5 * beta), np.where(small, d / beta, np.sign(d)))


def np_huber(x, y, delta=1.0):
    d = x - y
    a = np.abs(d)
    small = a <= delta
    return _np_mean(np.where(small, 0.5 * d * d, delta * (a - 0.5 * delta)), np.where(small, d, delta * np.sign(d)))


def np_soft_margin(x, y):
    z = -y * x
    return _np_mean(np.logaddexp(0, z), -y * _sigmoid(z))


def np_bce(x, y):
    loss = -(y * np.maximum(np.log(x), -100) + (1 - y) * np.maximum(np.log1p(-x), -100))
    return _np_mean(loss, (x - y) / np.maximum(x * (1 - x), 1e-12))


def np_bce_with_logits(x, y):
    return _np_mean((1 - y) * x + np.logaddexp(0, -x), _sigmoid(x) - y)


def np_poisson(x, y):
    e = np.exp(x)
    return _np_mean(e - y * x, e - y)


def np_gaussian(x, y, v):
    d = x - y
    return _np_mean(0.5 * (np.log(v) + d * d / v), d / v)


def np_kl_div(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(y), 0)
    return _np_mean(ylogy - y * x, -y)


def np_hinge(x, y, margin=1.0):
    h = margin - x
    loss = np.where(y == 1, x, np.maximum(h, 0))
    return _np_mean(loss, np.where(y == 1, 1.0, np.where(h >= 0, -1.0, 0.0)).astype(x.dtype))


def np_margin_ranking(x1, x2, y):
    h = -y * (x1 - x2)
    g = np.where(h >= 0, -y, 0)
    return _np_mean(np.maximum(h, 0), g)


def np_sigmoid_focal(x, y, alpha=0.25):
    p = _sigmoid(x)
    ce = (1 - y) * x + np.logaddexp(0, -x)
    q = p + y - 2 * p * y
    at = alpha * y + (1 - alpha) * (1 - y)
    grad = at * ((p - y) * q * q + ce * 2 * q * p * (1 - p) * (1 - 2 * y))
    return _np_mean(at * ce * q * q, grad)


def np_pinball(x, y, q=0.9):
    d = y - x
    return _np_mean(np.where(d >= 0, q * d, (q - 1) * d), np.where(d >= 0, -q, 1 - q).astype(x.dtype))


def np_pseudo_huber(x, y):
    d = x - y
    h = np.sqrt(1 + d * d)
    return _np_mean(h - 1, d / h)


def np_log_cosh(x, y):
    d = x - y
    a = np.abs(d)
    return _np_mean(a + np.log1p(np.exp(-2 * a)) - np.float32(np.log(2)), np.tanh(d))


def np_tweedie(x, y, p=1.5):
    a, b = y * np.exp((1 - p) * x), np.exp((2 - p) * x)
    return _np_mean(a / (p - 1) + b / (2 - p), b - a)


def np_gamma(x, y):
    ye = y * np.exp(-x)
    return _np_mean(x + ye, 1 - ye)


def np_exponential(x, y):
    e = np.exp(-(2 * y - 1) * x)
    return _np_mean(e, -(2 * y - 1) * e)


def torch_regression(name):
    """The regression objectives as a torch user writes them (torch has none), mean-reduced."""
    def pinball(x, y, q=0.9):
        return torch.where(y >= x, q * (y - x), (1 - q) * (x - y)).mean()

    def tweedie(x, y, p=1.5):
        return (y * torch.exp((1 - p) * x) / (p - 1) + torch.exp((2 - p) * x) / (2 - p)).mean()
    return {"pinball": pinball,
            "pseudo_huber": lambda x, y: (torch.sqrt(1 + (x - y) ** 2) - 1).mean(),
            "log_cosh": lambda x, y: torch.log(torch.cosh(x - y)).mean(),
            "tweedie": tweedie,
            "gamma": lambda x, y: (x + y * torch.exp(-x)).mean(),
            "exponential": lambda x, y: torch.exp(-(2 * y - 1) * x).mean()}[name]


def jax_regression(name):
    def pinball(j, x, y, q=0.9):
        return j.mean(j.where(y >= x, q * (y - x), (1 - q) * (x - y)))
    return {"pinball": pinball,
            "pseudo_huber": lambda j, x, y: j.mean(j.sqrt(1 + (x - y) ** 2) - 1),
            "log_cosh": lambda j, x, y: j.mean(j.logaddexp(x - y, y - x) - np.log(2)),
            "tweedie": lambda j, x, y: j.mean(y * j.exp(-0.5 * x) / 0.5 + j.exp(0.5 * x) / 0.5),
            "gamma": lambda j, x, y: j.mean(x + y * j.exp(-x)),
            "exponential": lambda j, x, y: j.mean(j.exp(-(2 * y - 1) * x))}[name]


def torch_sigmoid_focal(x, y, alpha=0.25, gamma=2.0):
    # torchvision.ops.sigmoid_focal_loss, mean-reduced
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * y + (1 - alpha) * (1 - y)) * loss).mean()


def jax_sigmoid_focal(j, x, y, alpha=0.25):
    p = 1 / (1 + j.exp(-x))
    ce = (1 - y) * x + j.logaddexp(0, -x)
    q = p + y - 2 * p * y
    return j.mean((alpha * y + (1 - alpha) * (1 - y)) * ce * q * q)


def sklearn_loss(name):
    """scikit-learn's Cython losses with preallocated outputs, where it has the loss."""
    def make(arrays, num_threads):
        try:
            from sklearn._loss import loss as sk
        except ImportError:
            return None
        x, y = arrays[:2]
        # sklearn's half losses: half squared error, half Poisson (log link), half binomial (logit)
        loss = {"mse": sk.HalfSquaredError, "poisson_nll": sk.HalfPoissonLoss,
                "bce_with_logits": sk.HalfBinomialLoss, "pinball": lambda: sk.PinballLoss(quantile=0.9),
                "tweedie": lambda: sk.HalfTweedieLoss(power=1.5), "gamma": sk.HalfGammaLoss,
                "exponential": sk.ExponentialLoss}[name]()
        loss_out, grad_out = np.empty_like(x), np.empty_like(x)
        return lambda: loss.loss_gradient(y, x, loss_out=loss_out, gradient_out=grad_out, n_threads=num_threads)
    return make


CASES = [
    Case("L1Loss", fl.L1Loss, lambda r, n: [_normal(r, n), _normal(r, n)],
         lambda x, y: F.l1_loss(x, y), np_l1,
         jax=lambda j, x, y: j.mean(j.abs(x - y))),
    Case("MSELoss", fl.MSELoss, lambda r, n: [_normal(r, n), _normal(r, n)],
         lambda x, y: F.mse_loss(x, y), np_mse, sklearn_loss("mse"),
         jax=lambda j, x, y: j.mean((x - y) ** 2)),
    Case("SmoothL1Loss", fl.SmoothL1Loss, lambda r, n: [_normal(r, n), _normal(r, n)],
         lambda x, y: F.smooth_l1_loss(x, y), np_smooth_l1,
         jax=lambda j, x, y: j.mean(j.where(j.abs(x - y) < 1, 0.5 * (x - y) ** 2, j.abs(x - y) - 0.5))),
    Case("HuberLoss", fl.HuberLoss, lambda r, n: [_normal(r, n), _normal(r, n)],
         lambda x, y: F.huber_loss(x, y), np_huber,
         jax=lambda j, x, y: j.mean(j.where(j.abs(x - y) <= 1, 0.5 * (x - y) ** 2, j.abs(x - y) - 0.5))),
    Case("SoftMarginLoss", fl.SoftMarginLoss, lambda r, n: [_normal(r, n), _signs(r, n)],
         lambda x, y: F.soft_margin_loss(x, y), np_soft_margin,
         jax=lambda j, x, y: j.mean(j.logaddexp(0, -y * x))),
    Case("BCELoss", fl.BCELoss, lambda r, n: [r.uniform(0.01, 0.99, n).astype(np.float32), _binary(r, n)],
         lambda x, y: F.binary_cross_entropy(x, y), np_bce,
         jax=lambda j, x, y: -j.mean(y * j.maximum(j.log(x), -100) + (1 - y) * j.maximum(j.log1p(-x), -100))),
    Case("BCEWithLogitsLoss", fl.BCEWithLogitsLoss, lambda r, n: [_normal(r, n), _binary(r, n)],
         lambda x, y: F.binary_cross_entropy_with_logits(x, y), np_bce_with_logits,
         sklearn_loss("bce_with_logits"),
         jax=lambda j, x, y: j.mean((1 - y) * x + j.logaddexp(0, -x))),
    Case("PoissonNLLLoss", fl.PoissonNLLLoss,
         lambda r, n: [_normal(r, n), r.poisson(1.0, n).astype(np.float32)],
         lambda x, y: F.poisson_nll_loss(x, y), np_poisson, sklearn_loss("poisson_nll"),
         jax=lambda j, x, y: j.mean(j.exp(x) - y * x)),
    Case("GaussianNLLLoss", fl.GaussianNLLLoss,
         lambda r, n: [_normal(r, n), _normal(r, n), r.uniform(0.5, 2, n).astype(np.float32)],
         lambda x, y, v: F.gaussian_nll_loss(x, y, v), np_gaussian, bytes_per_element=20,
         differentiable=(0, 2),
         jax=lambda j, x, y, v: j.mean(0.5 * (j.log(v) + (x - y) ** 2 / v))),
    Case("KLDivLoss", lambda: fl.KLDivLoss(reduction="batchmean"),
         lambda r, n: [np.log(r.uniform(0.01, 1, n)).astype(np.float32),
                       r.uniform(0, 1, n).astype(np.float32) * _binary(r, n)],
         lambda x, y: F.kl_div(x, y, reduction="batchmean"), np_kl_div,
         jax=lambda j, x, y: j.sum(j.where(y > 0, y * j.log(j.where(y > 0, y, 1)), 0) - y * x) / x.shape[0]),
    Case("HingeEmbeddingLoss", fl.HingeEmbeddingLoss, lambda r, n: [np.abs(_normal(r, n)), _signs(r, n)],
         lambda x, y: F.hinge_embedding_loss(x, y), np_hinge,
         jax=lambda j, x, y: j.mean(j.where(y == 1, x, j.maximum(1 - x, 0)))),
    Case("MarginRankingLoss", fl.MarginRankingLoss, lambda r, n: [_normal(r, n), _normal(r, n), _signs(r, n)],
         lambda a, b, y: F.margin_ranking_loss(a, b, y), np_margin_ranking, bytes_per_element=20,
         differentiable=(0, 1),
         jax=lambda j, a, b, y: j.mean(j.maximum(-y * (a - b), 0))),
    Case("SigmoidFocalLoss", fl.SigmoidFocalLoss, lambda r, n: [_normal(r, n), _binary(r, n)],
         torch_sigmoid_focal, np_sigmoid_focal,
         jax=jax_sigmoid_focal),
    Case("PinballLoss", lambda: fl.PinballLoss(0.9), lambda r, n: [_normal(r, n), _normal(r, n)],
         torch_regression("pinball"), np_pinball, sklearn_loss("pinball"), jax=jax_regression("pinball")),
    Case("PseudoHuberLoss", fl.PseudoHuberLoss, lambda r, n: [_normal(r, n), _normal(r, n)],
         torch_regression("pseudo_huber"), np_pseudo_huber, jax=jax_regression("pseudo_huber")),
    Case("LogCoshLoss", fl.LogCoshLoss, lambda r, n: [_normal(r, n), _normal(r, n)],
         torch_regression("log_cosh"), np_log_cosh, jax=jax_regression("log_cosh")),
    Case("TweedieLoss", fl.TweedieLoss, lambda r, n: [_normal(r, n), _tweedie_targets(r, n)],
         torch_regression("tweedie"), np_tweedie, sklearn_loss("tweedie"), jax=jax_regression("tweedie")),
    Case("GammaLoss", fl.GammaLoss, lambda r, n: [_normal(r, n), r.gamma(2.0, 1.0, n).astype(np.float32)],
         torch_regression("gamma"), np_gamma, sklearn_loss("gamma"), jax=jax_regression("gamma")),
    Case("ExponentialLoss", fl.ExponentialLoss, lambda r, n: [_normal(r, n), _binary(r, n)],
         torch_regression("exponential"), np_exponential, sklearn_loss("exponential"),
         jax=jax_regression("exponential")),
]

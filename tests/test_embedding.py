"""The embedding family against torch float64 (ContrastiveLoss against a torch composition of
its formula), finite differences on our float64 gradients, determinism and bad input."""
import cases
import numpy as np
import pytest
from conftest import (
    DTYPES,
    REDUCTIONS,
    assert_close,
    central_differences,
    parallel,
    registry_parity,
    torch,
    torch_oracle,
)

import fastloss as fl

F = torch.nn.functional


def torch_contrastive(x1, x2, y, margin=1.0, reduction="mean"):
    d = torch.linalg.vector_norm(x1 - x2, dim=-1)
    loss = y * d ** 2 + (1 - y) * torch.clamp_min(margin - d, 0) ** 2
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def torch_cosine_distance(x, y):
    return 1 - F.cosine_similarity(x, y, dim=-1)


# name -> (our criterion, the torch loss given the same options, number of embeddings, labels)
def triplet(reduction="mean", **o):
    return fl.TripletMarginLoss(reduction=reduction, **o), lambda a, p, n, reduction: F.triplet_margin_loss(a, p, n, reduction=reduction, **o)


def triplet_distance(distance, reduction="mean", **o):
    torch_distance = {None: None, "euclidean": None, "cosine": torch_cosine_distance}[distance]
    return (fl.TripletMarginWithDistanceLoss(distance_function=distance, reduction=reduction, **o),
            lambda a, p, n, reduction: F.triplet_margin_with_distance_loss(
                a, p, n, distance_function=torch_distance, reduction=reduction, **o))


def cosine(reduction="mean", **o):
    return fl.CosineEmbeddingLoss(reduction=reduction, **o), lambda a, b, y, reduction: F.cosine_embedding_loss(a, b, y, reduction=reduction, **o)


def contrastive(reduction="mean", **o):
    return fl.ContrastiveLoss(reduction=reduction, **o), lambda a, b, y, reduction: torch_contrastive(a, b, y, reduction=reduction, **o)


CASES = [
    ("triplet", triplet, {}, None),
    ("triplet", triplet, {"margin": 0.3, "p": 1.0, "eps": 0.0}, None),
    ("triplet", triplet, {"p": 3.0, "swap": True}, None),
    ("triplet", triplet, {"margin": 2.0, "swap": True, "eps": 1e-3}, None),
    ("triplet-distance", lambda **o: triplet_distance(None, **o), {}, None),
    ("triplet-distance", lambda **o: triplet_distance("euclidean", **o), {"swap": True, "margin": 0.5}, None),
    ("triplet-distance", lambda **o: triplet_distance("cosine", **o), {}, None),
    ("triplet-distance", lambda **o: triplet_distance("cosine", **o), {"swap": True, "margin": 0.2}, None),
    ("cosine", cosine, {}, "sign"),
    ("cosine", cosine, {"margin": 0.2}, "sign"),
    ("cosine", cosine, {"margin": -0.3}, "sign"),
    ("contrastive", contrastive, {}, "binary"),
    ("contrastive", contrastive, {"margin": 4.0}, "binary"),
    ("contrastive", contrastive, {"margin": 3.0}, "soft"),
]


def make_arrays(rng, shape, labels, dtype):
    """Embeddings near each other so that every branch (margins active or not) is taken."""
    base = rng.standard_normal(shape)
    count = 2 if labels else 3
    arrays = [(base + rng.standard_normal(shape) * rng.uniform(0.2, 1.5)).astype(dtype) for _ in range(count)]
    rows = shape[:-1]
    if labels == "sign":
        arrays.append(rng.choice([-1, 1], size=rows).astype(np.int64))
    elif labels == "binary":
        arrays.append(rng.integers(0, 2, size=rows))
    elif labels == "soft":
        arrays.append(rng.random(rows))
    return arrays


@pytest.mark.parametrize("name, make, options, labels", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
@pytest.mark.parametrize("shape", [(37, 19), (5, 300), (7,), (0, 4), (130, 600)], ids=["37x19", "5x300", "1d", "empty", "parallel"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parity_with_torch(name, make, options, labels, shape, reduction, dtype):
    rng = np.random.default_rng(abs(hash((name, str(options), shape))) % 2 ** 32)
    arrays = make_arrays(rng, shape, labels, dtype)
    crit, torch_loss = make(reduction=reduction, **options)
    count = len(crit.differentiable)
    grad_output = rng.standard_normal(shape[:-1]) if reduction == "none" else 1.7
    loss, grads = crit(*arrays, grad_output=grad_output)
    ref_loss, ref_grads = torch_oracle(lambda *t, reduction: torch_loss(*t, reduction=reduction), arrays,
                                       tuple(range(count)), reduction,
                                       grad_output if reduction == "none" else None)
    if reduction != "none":
        ref_grads = [g * grad_output for g in ref_grads]
    assert np.asarray(loss).dtype == dtype
    assert_close(loss, ref_loss, dtype, what=f"{name} {options} loss")
    assert_close(crit.loss(*arrays), ref_loss, dtype, what="loss()")
    assert len(grads) == count
    for i, (g, ref) in enumerate(zip(grads, ref_grads)):
        assert g.dtype == dtype and g.shape == arrays[i].shape
        assert_close(g, ref, dtype, what=f"{name} {options} grad {crit.differentiable[i]}")


@pytest.mark.parametrize("name, make, options, labels", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_gradients_match_finite_differences(name, make, options, labels):
    rng = np.random.default_rng(3)
    arrays = make_arrays(rng, (4, 6), labels, np.float64)
    crit, _ = make(reduction="sum", **options)
    _, grads = crit(*arrays)
    for i in range(len(crit.differentiable)):
        numeric = central_differences(lambda *a: float(crit.loss(*a)), arrays, i)
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-8, err_msg=f"{name} {options} input {i}")


def test_callable_distance_pair_matches_torch():
    """A user's (d, d_grad) pair: here the squared euclidean distance."""
    def d(x, y):
        return ((x - y) ** 2).sum(-1)

    def d_grad(x, y, g):
        gx = 2 * (x - y) * g[..., None]
        return gx, -gx

    rng = np.random.default_rng(5)
    for swap in (False, True):
        for reduction in REDUCTIONS:
            arrays = make_arrays(rng, (9, 5), None, np.float64)
            crit = fl.TripletMarginWithDistanceLoss(distance_function=(d, d_grad), swap=swap, margin=2.0, reduction=reduction)
            loss, grads = crit(*arrays)
            ref_loss, ref_grads = torch_oracle(
                lambda a, p, n, reduction: F.triplet_margin_with_distance_loss(
                    a, p, n, distance_function=lambda x, y: ((x - y) ** 2).sum(-1), margin=2.0, swap=swap,
                    reduction=reduction), arrays, (0, 1, 2), reduction)
            assert_close(loss, ref_loss, np.float64)
            for g, ref in zip(grads, ref_grads):
                assert_close(g, ref, np.float64)


def test_swap_tie_splits_the_gradient_as_torch():
    a = np.array([[0.0, 0.0]])
    p = np.array([[1.0, 0.0]])
    n = np.array([[0.5, 2.0]])   # |a - n| = |p - n| exactly
    crit = fl.TripletMarginLoss(margin=5.0, swap=True, eps=0.0)
    _, grads = crit(a, p, n)
    _, ref = torch_oracle(lambda *t, reduction: F.triplet_margin_loss(*t, margin=5.0, swap=True, eps=0.0, reduction=reduction),
                          [a, p, n], (0, 1, 2), "mean")
    for g, r in zip(grads, ref):
        assert_close(g, r, np.float64)


@pytest.mark.parametrize("make, labels", [(lambda: fl.TripletMarginLoss(swap=True), None),
                                          (lambda: fl.TripletMarginWithDistanceLoss(distance_function="cosine"), None),
                                          (lambda: fl.CosineEmbeddingLoss(), "sign"),
                                          (lambda: fl.ContrastiveLoss(), "binary")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_any_thread_count(make, labels, dtype):
    arrays = make_arrays(np.random.default_rng(8), (3000, 70), labels, dtype)
    results = []
    for n in (1, 2, 4):
        with parallel(n):
            results.append(make()(*arrays))
    for loss, grads in results[1:]:
        assert loss.tobytes() == results[0].loss.tobytes()
        for g, g0 in zip(grads, results[0].grad):
            assert g.tobytes() == g0.tobytes()


@pytest.mark.parametrize("make, args, error, message", [
    (fl.TripletMarginLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 5)), np.zeros((3, 4))), ValueError,
     r"positive: expected shape \(3, 4\) \(anchor's\), got \(3, 5\)"),
    (fl.TripletMarginLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((2, 4))), ValueError,
     r"negative: expected shape \(3, 4\)"),
    (fl.TripletMarginLoss, lambda: (np.zeros((2, 3, 4)),) * 3, ValueError, r"anchor: expected shape \(N, D\) or \(D,\), got \(2, 3, 4\)"),
    (fl.TripletMarginLoss, lambda: (np.zeros((3, 4), np.int64),) * 3, TypeError, r"anchor"),
    (fl.TripletMarginLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 4), np.float32), np.zeros((3, 4))), TypeError,
     r"positive: expected dtype float64"),
    (fl.CosineEmbeddingLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 4)), np.ones(4)), ValueError,
     r"target: expected shape \(3,\) \(one label per row\), got \(4,\)"),
    (fl.ContrastiveLoss, lambda: (np.zeros((3, 4)), np.zeros((3, 4)), np.ones(3, complex)), TypeError, r"target"),
])
def test_bad_input(make, args, error, message):
    with pytest.raises(error, match=message):
        make()(*args())


def test_nothing_is_written_to_out_when_validation_fails():
    out = tuple(np.full((3, 4), 7.0) for _ in range(2))
    with pytest.raises(ValueError, match="target"):
        fl.CosineEmbeddingLoss()(np.ones((3, 4)), np.ones((3, 4)), np.ones(4), out=out)
    assert all((buf == 7.0).all() for buf in out)


@pytest.mark.parametrize("make, message", [
    (lambda: fl.TripletMarginWithDistanceLoss(distance_function="manhattan"), r"distance_function: expected None, 'euclidean', 'cosine'"),
    (lambda: fl.TripletMarginWithDistanceLoss(margin=0.0), r"margin: expected a number > 0"),
    (lambda: fl.TripletMarginLoss(p=0), r"p: expected"),
    (lambda: fl.ContrastiveLoss(reduction="avg"), r"reduction"),
])
def test_bad_options(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_out_and_functional():
    arrays = make_arrays(np.random.default_rng(2), (6, 8), None, np.float32)
    out = tuple(np.empty((6, 8), np.float32) for _ in range(3))
    loss, grads = fl.functional.triplet_margin_loss_and_grad(*arrays, out=out, margin=0.5)
    assert all(g is o for g, o in zip(grads, out))
    assert fl.functional.triplet_margin_loss(*arrays, margin=0.5) == loss
    ref, _ = fl.TripletMarginLoss(margin=0.5)(*arrays)
    assert ref == loss


def torch_nt_xent(z1, z2, temperature=0.5, reduction="mean"):
    """SPEC's definition written out in torch: normalise, stack, mask the diagonal, cross entropy
    against the other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = z @ z.T / temperature
    M = s.shape[0]
    s = s.masked_fill(torch.eye(M, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(s, (torch.arange(M) + M // 2) % M, reduction=reduction)


@pytest.mark.parametrize("N, D, chunk_rows", [(1, 3, None), (6, 4, None), (37, 9, 5), (300, 16, 64), (0, 4, None)])
@pytest.mark.parametrize("temperature", [0.5, 0.07])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nt_xent_matches_torch(N, D, chunk_rows, temperature, reduction, dtype):
    rng = np.random.default_rng(N * 7 + D)
    z1, z2 = (rng.standard_normal((N, D)).astype(dtype) * 3 for _ in range(2))
    if N > 2:
        z2[1] = 0.0   # a zero row: F.normalize's clamp
    crit = fl.NTXentLoss(temperature, reduction, chunk_rows=chunk_rows)
    grad_output = rng.standard_normal(2 * N) if reduction == "none" else 0.6
    loss, grads = crit(z1, z2, grad_output=grad_output)
    ref_loss, ref_grads = torch_oracle(lambda a, b, reduction: torch_nt_xent(a, b, temperature, reduction),
                                       [z1, z2], (0, 1), reduction, grad_output if reduction == "none" else None)
    if reduction != "none":
        ref_grads = [g * grad_output for g in ref_grads]
    assert np.asarray(loss).dtype == dtype
    assert_close(loss, ref_loss, dtype, what="loss")
    assert_close(crit.loss(z1, z2), ref_loss, dtype, what="loss()")
    for g, ref in zip(grads, ref_grads):
        assert g.dtype == dtype
        assert_close(g, ref, dtype, what="grad")


def test_nt_xent_gradients_match_finite_differences():
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal((5, 3)), rng.standard_normal((5, 3))]
    crit = fl.NTXentLoss(0.4, "sum", chunk_rows=2)
    _, grads = crit(*arrays)
    for i in range(2):
        numeric = central_differences(lambda *a: float(crit.loss(*a)), arrays, i)
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-8)


def test_nt_xent_bad_input():
    with pytest.raises(ValueError, match=r"z2: expected shape \(4, 3\) \(z1's\), got \(4, 2\)"):
        fl.NTXentLoss()(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"z1: expected shape \(N, D\), got \(3,\)"):
        fl.NTXentLoss()(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"temperature: expected"):
        fl.NTXentLoss(temperature=0)


# ---------------------------------------------------------------- the shared registry (tests/cases.py)
@pytest.mark.parametrize("case", cases.of_family("embedding"), ids=[c[0] for c in cases.of_family("embedding")])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_registry_cases_match_torch(case, reduction, dtype):
    registry_parity(case, reduction, dtype)

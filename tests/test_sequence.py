"""CTCLoss against torch float64: every reduction, zero_infinity, padded, concatenated and
unbatched targets, repeated labels, impossible alignments; finite differences through a
log_softmax (the gradient torch reports is the one with respect to the logits); bad input."""
import cases
import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, assert_close, central_differences, parallel, registry_parity, torch

import fastloss as fl

F = torch.nn.functional


def make_case(rng, T, N, C, S, dtype, repeats=False, impossible=False):
    logits = rng.standard_normal((T, N, C))
    log_probs = torch.tensor(logits).log_softmax(-1).numpy().astype(dtype)
    target_lengths = rng.integers(0, S + 1, N)
    target_lengths[0] = S
    input_lengths = rng.integers(max(1, 2 * S), T + 1, N)
    input_lengths[0] = T
    labels = rng.integers(1, C, (N, S))
    if repeats:   # runs of one label make the alpha recursion skip-free there
        labels[:, 1::2] = labels[:, ::2][:, : labels[:, 1::2].shape[1]]
    if impossible:
        input_lengths[-1] = max(0, target_lengths[-1] - 1)
    return log_probs, labels, input_lengths, target_lengths


def torch_ctc(log_probs, targets, input_lengths, target_lengths, reduction, zero_infinity, grad_output, blank=0):
    lp = torch.tensor(np.asarray(log_probs, dtype=np.float64), requires_grad=True)
    loss = F.ctc_loss(lp, torch.tensor(targets), torch.tensor(input_lengths), torch.tensor(target_lengths),
                      blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    loss.backward(torch.tensor(np.asarray(grad_output, dtype=np.float64)).expand(loss.shape))
    return loss.detach().numpy(), lp.grad.numpy()


@pytest.mark.parametrize("layout", ["padded", "concatenated"])
@pytest.mark.parametrize("kind", ["plain", "repeats", "impossible"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parity_with_torch(layout, kind, zero_infinity, reduction, dtype):
    rng = np.random.default_rng(abs(hash((layout, kind))) % 2 ** 32)
    log_probs, labels, input_lengths, target_lengths = make_case(
        rng, 40, 5, 7, 9, dtype, repeats=kind == "repeats", impossible=kind == "impossible")
    targets = labels if layout == "padded" else np.concatenate([labels[b, :n] for b, n in enumerate(target_lengths)])
    grad_output = rng.standard_normal(5) if reduction == "none" else 0.7
    crit = fl.CTCLoss(reduction=reduction, zero_infinity=zero_infinity)
    loss, grad = crit(log_probs, targets, input_lengths, target_lengths, grad_output=grad_output)
    ref_loss, ref_grad = torch_ctc(log_probs, targets, input_lengths, target_lengths, reduction, zero_infinity,
                                   grad_output)
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype and grad.shape == log_probs.shape
    assert_close(loss, ref_loss, dtype, what="loss")
    assert_close(crit.loss(log_probs, targets, input_lengths, target_lengths), ref_loss, dtype, what="loss()")
    finite = np.isfinite(ref_grad)
    assert_close(np.where(finite, grad, 0), np.where(finite, ref_grad, 0), dtype, what="grad")
    assert (np.isnan(grad) == np.isnan(ref_grad)).all()


@pytest.mark.parametrize("blank", [0, 3])
def test_unbatched_and_blank_elsewhere(blank):
    rng = np.random.default_rng(blank)
    log_probs = torch.tensor(rng.standard_normal((20, 5))).log_softmax(-1).numpy()
    labels = np.array([c for c in (1, 2, 2, 4, 0) if c != blank][:3])
    for reduction in REDUCTIONS:
        loss, grad = fl.CTCLoss(blank=blank, reduction=reduction)(log_probs, labels, 20, 3)
        ref_loss, ref_grad = torch_ctc(log_probs, labels, 20, 3, reduction, False, 1.0, blank=blank)
        assert np.shape(loss) == ref_loss.shape
        assert_close(loss, ref_loss, np.float64)
        assert_close(grad, ref_grad, np.float64)


def test_gradient_is_the_logits_gradient_by_finite_differences():
    """torch's CTC gradient is d loss(log_softmax(z)) / d z, evaluated at log_probs."""
    rng = np.random.default_rng(4)
    T, N, C = 6, 2, 4
    logits = rng.standard_normal((T, N, C))
    targets, input_lengths, target_lengths = np.array([[1, 2], [3, 3]]), np.array([6, 5]), np.array([2, 2])
    crit = fl.CTCLoss(reduction="sum")

    def loss_of_logits(z):
        shifted = z - z.max(-1, keepdims=True)
        return float(crit.loss(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)), targets, input_lengths,
                               target_lengths))
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    _, grad = crit(log_probs, targets, input_lengths, target_lengths)
    np.testing.assert_allclose(grad, central_differences(loss_of_logits, [logits], 0), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_for_any_thread_count(dtype):
    rng = np.random.default_rng(9)
    args = make_case(rng, 120, 33, 40, 20, dtype)
    results = []
    for n in (1, 2, 4):
        with parallel(n):
            results.append(fl.CTCLoss()(*args))
    for loss, grad in results[1:]:
        assert loss.tobytes() == results[0].loss.tobytes() and grad.tobytes() == results[0].grad.tobytes()


LP = np.log(np.full((10, 2, 5), 0.2))


@pytest.mark.parametrize("args, error, message", [
    ((LP, np.ones((2, 3), int), [10, 10, 10], [3, 3]), ValueError, r"input_lengths: expected 2 length\(s\)"),
    ((LP, np.ones((2, 3), int), [10, 11], [3, 3]), ValueError, r"input_lengths: expected lengths at most T = 10.*got 11 at position \(1,\)"),
    ((LP, np.ones((2, 3), int), [10, 10], [3, -1]), ValueError, r"target_lengths: expected lengths >= 0, got -1 at position \(1,\)"),
    ((LP, np.ones((2, 3), int), [10, -2], [3, 3]), ValueError, r"input_lengths: expected lengths >= 0, got -2"),
    ((LP, np.ones((2, 3), int), [10, 10], [3, 4]), ValueError, r"target_lengths: expected lengths at most S = 3"),
    ((LP, np.array([[1, 0, 2], [1, 1, 1]]), [10, 10], [3, 3]), ValueError, r"targets: expected labels in \[0, 5\) other than blank 0, got 0 at position \(0, 1\)"),
    ((LP, np.array([[1, 7, 2], [1, 1, 1]]), [10, 10], [3, 3]), ValueError, r"got 7 at position \(0, 1\)"),
    ((LP, np.ones(5, int), [10, 10], [3, 3]), ValueError, r"targets: expected 6 labels"),
    ((LP, np.ones((2, 3)), [10, 10], [3, 3]), TypeError, r"targets: expected class indices of an integer dtype"),
    ((LP, np.ones((2, 3), int), [10.0, 10.0], [3, 3]), TypeError, r"input_lengths: expected integer lengths"),
    ((LP[:, 0], np.ones((2, 3), int), 10, 3), ValueError, r"targets: expected shape \(S,\)"),
    ((np.ones((2, 3, 4, 5)), np.ones((2, 3), int), [10, 10], [3, 3]), ValueError, r"log_probs: expected shape \(T, N, C\)"),
])
def test_bad_input(args, error, message):
    out = np.full(LP.shape, 7.0)
    with pytest.raises(error, match=message):
        fl.CTCLoss()(*args, out=out if args[0].shape == LP.shape else None)
    assert (out == 7.0).all()


def test_bad_options():
    with pytest.raises(ValueError, match=r"blank: expected a class index in \[0, 5\), got 5"):
        fl.CTCLoss(blank=5)(LP, np.ones((2, 3), int), [10, 10], [3, 3])
    with pytest.raises(ValueError, match="blank"):
        fl.CTCLoss(blank=-1)


# ---------------------------------------------------------------- the shared registry (tests/cases.py)
@pytest.mark.parametrize("case", cases.of_family("sequence"), ids=[c[0] for c in cases.of_family("sequence")])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_registry_cases_match_torch(case, reduction, dtype):
    registry_parity(case, reduction, dtype)

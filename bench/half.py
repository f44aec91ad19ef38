"""Half-precision data in memory (run with --family half; not part of the default run):
fwd+bwd and the loss alone of float16 and bfloat16 arrays against the same values in float32,
fastloss's time per dtype as a ratio to its float32 call, beside torch's bfloat16 CPU call
(the same threads). The pointwise family reads half data in its kernels' loops; cross entropy
(and the margin and embedding losses) widen a row at a time (gathered from (N, C, H, W) too),
NLL its one value per row, Dice a run of class planes at a time, CTC a value per state and a
frame's row for the gradient; LinearCrossEntropyLoss widens chunks of rows and slabs of its
weight, NTXentLoss its rows into its normalised-row buffer (fastloss/_half.py).
"""
import numpy as np

import fastloss as fl

from .harness import best_time, torch

F = torch.nn.functional if torch is not None else None


def _binary(r, shape):
    return [r.standard_normal(shape, dtype=np.float32), (r.random(shape) < 0.5).astype(np.float32)]


def _logits(r, shape):
    return [r.standard_normal(shape, dtype=np.float32), r.integers(0, shape[1], shape[0])]


def _segmentation(r, shape):
    return [r.standard_normal(shape, dtype=np.float32), r.integers(0, shape[1], (shape[0],) + shape[2:])]


def _torch_dice(x, t):
    from .softmax import torch_dice_multiclass
    return torch_dice_multiclass(x, t)


def _triplets(r, shape):
    return [r.standard_normal(shape, dtype=np.float32) for _ in range(3)]


def _pairs(r, shape):
    return [r.standard_normal(shape, dtype=np.float32) for _ in range(2)]


def _linear(r, shape):
    N, H, C = shape
    return [r.standard_normal((N, H), dtype=np.float32), (r.standard_normal((C, H)) * H ** -0.5).astype(np.float32),
            r.integers(0, C, N)]


def _ctc(r, shape):
    from .sequence import _ctc_case
    return _ctc_case(r, shape + (50,))


def _torch_ctc(lp, targets, input_lengths, target_lengths):
    return F.ctc_loss(lp.float(), targets, input_lengths, target_lengths)   # (torch's CPU CTC takes no bfloat16)


def _torch_nt_xent(z1, z2):
    from .embedding import torch_nt_xent
    return torch_nt_xent(z1, z2)


def _cases(quick):
    n = 1_000_000 if quick else 10_000_000
    rows = (1024, 1000) if quick else (4096, 1000)
    wide = (256, 32000) if quick else (2048, 32000)
    seg = (2, 21, 128, 128) if quick else (8, 21, 256, 256)
    linear = (256, 512, 32000) if quick else (2048, 1024, 32000)
    return [
        ("BCEWithLogitsLoss", (n,), fl.BCEWithLogitsLoss(), _binary,
         lambda x, y: F.binary_cross_entropy_with_logits(x, y)),
        ("MSELoss", (n,), fl.MSELoss(), _binary, lambda x, y: F.mse_loss(x, y)),
        ("HuberLoss", (n,), fl.HuberLoss(), _binary, lambda x, y: F.huber_loss(x, y)),
        ("CrossEntropyLoss", rows, fl.CrossEntropyLoss(), _logits, lambda x, t: F.cross_entropy(x, t)),
        ("CrossEntropyLoss", wide, fl.CrossEntropyLoss(), _logits, lambda x, t: F.cross_entropy(x, t)),
        ("NLLLoss", rows, fl.NLLLoss(), _logits, lambda x, t: F.nll_loss(x, t)),
        ("MultiLabelSoftMargin", rows, fl.MultiLabelSoftMarginLoss(), _binary,
         lambda x, y: F.multilabel_soft_margin_loss(x, y)),
        ("CE (N, C, H, W)", seg, fl.CrossEntropyLoss(), _segmentation, lambda x, t: F.cross_entropy(x, t)),
        ("DiceLoss multiclass", seg, fl.DiceLoss("multiclass"), _segmentation, _torch_dice),
        ("CTCLoss", (200, 32, 50), fl.CTCLoss(), _ctc, _torch_ctc),
        ("LinearCE", linear, fl.LinearCrossEntropyLoss(), _linear,
         lambda x, w, t: F.cross_entropy(x @ w.T, t)),
        ("NTXentLoss", (512 if quick else 2048, 256), fl.NTXentLoss(), _pairs, _torch_nt_xent),
        ("TripletMarginLoss", (rows[0] * 16, 256), fl.TripletMarginLoss(), _triplets,
         lambda a, p, n: F.triplet_margin_loss(a, p, n)),
    ]


def _torch_bf16(fn, arrays, differentiable):
    """torch's bfloat16 fwd+bwd, with a gradient for each of the first `differentiable` arrays."""
    if torch is None:
        return None
    tensors = [torch.from_numpy(a).to(torch.bfloat16) if a.dtype.kind == "f" else torch.from_numpy(a) for a in arrays]
    for t in tensors[:differentiable]:
        t.requires_grad_(True)

    def run():
        for t in tensors[:differentiable]:
            t.grad = None
        fn(*tensors).backward()
    return best_time(run)


def _outs(crit, arrays, dtype):
    """out= for each differentiable array given, in `dtype`; and how many there are."""
    grads = [a for a, name in zip(arrays, crit.arguments) if name in crit.differentiable]
    outs = tuple(np.empty(a.shape, dtype) for a in grads)
    return (outs[0] if len(outs) == 1 else outs), len(outs)


def report(print_fn=print, quick=False):
    from fastloss._half import bfloat16
    BFLOAT16 = bfloat16(load=True)
    if BFLOAT16 is None:
        print_fn("(half precision: bfloat16 needs ml_dtypes)")
        return
    rng = np.random.default_rng(0)
    print_fn("")
    print_fn(f"half-precision data, {fl.get_num_threads()} threads: time over the float32 call's on the same values "
             "(fwd+bwd with out= in the data's dtype, and loss()); torch: its bfloat16 fwd+bwd over fastloss's")
    print_fn(f"{'loss':<20} {'shape':>14} {'float32':>10} {'f16/f32':>8} {'bf16/f32':>9} {'f16 loss':>9} "
             f"{'bf16 loss':>10} {'x torch bf16':>13}")
    for name, shape, crit, data, torch_fn in _cases(quick):
        arrays = data(rng, shape)
        out32, count = _outs(crit, arrays, np.float32)
        t32 = best_time(lambda: crit(*arrays, out=out32))
        l32 = best_time(lambda: crit.loss(*arrays))
        ratios, times = [], {}
        for dtype in (np.dtype(np.float16), BFLOAT16):
            half = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
            out = _outs(crit, half, dtype)[0]
            times[dtype] = best_time(lambda: crit(*half, out=out))
            ratios.append((times[dtype] / t32, best_time(lambda: crit.loss(*half)) / l32))
        torch_time = _torch_bf16(torch_fn, arrays, count)
        vs_torch = "-" if torch_time is None else f"{torch_time / times[BFLOAT16]:.1f}x"
        print_fn(f"{name:<20} {'x'.join(map(str, shape)):>14} {t32 * 1e3:>8.2f}ms {ratios[0][0]:>8.2f} "
                 f"{ratios[1][0]:>9.2f} {ratios[0][1]:>9.2f} {ratios[1][1]:>10.2f} {vs_torch:>13}")

"""Benchmark cases of the sequence family: CTC at the issue's size (T frames, N sequences,
C classes, S labels per target)."""
import numpy as np

import fastloss as fl

from .harness import Case, torch

if torch is not None:
    F = torch.nn.functional

SHAPES = ((200, 32, 50, 50),)


def _ctc_case(rng, shape):
    T, N, C, S = shape
    x = rng.standard_normal((T, N, C)).astype(np.float32)
    log_probs = x - x.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return [log_probs, rng.integers(1, C, (N, S)), np.full(N, T), rng.integers(S // 2, S + 1, N)]


def torch_ctc(log_probs, targets, input_lengths, target_lengths):
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths)


CASES = [
    Case("CTCLoss", fl.CTCLoss, _ctc_case, torch_ctc, bytes_per_element=0, shapes=SHAPES, quick_shapes=SHAPES),
]

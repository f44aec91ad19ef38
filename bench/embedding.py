"""Benchmark cases of the embedding family at the issue's sizes (N rows of D features)."""
import numpy as np

import fastloss as fl

from .harness import Case, torch

if torch is not None:
    F = torch.nn.functional

SHAPES = ((64, 128), (65536, 256))
QUICK_SHAPES = ((64, 128), (8192, 256))


def _embeddings(count, labels=None):
    def data(rng, shape):
        base = rng.standard_normal(shape, dtype=np.float32)
        arrays = [base + rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
        if labels == "sign":
            arrays.append(rng.choice(np.array([-1, 1]), size=shape[0]))
        elif labels == "binary":
            arrays.append(rng.integers(0, 2, size=shape[0]).astype(np.float32))
        return arrays
    return data


def torch_contrastive(x1, x2, y, margin=1.0):
    d = torch.linalg.vector_norm(x1 - x2, dim=-1)
    return (y * d ** 2 + (1 - y) * torch.clamp_min(margin - d, 0) ** 2).mean()


def torch_nt_xent(z1, z2, temperature=0.5):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = z @ z.T / temperature
    M = s.shape[0]
    s = s.masked_fill(torch.eye(M, dtype=torch.bool, device=s.device), float("-inf"))
    return F.cross_entropy(s, (torch.arange(M, device=s.device) + M // 2) % M)


CASES = [
    # bytes: three inputs read, three gradients written
    Case("TripletMarginLoss", fl.TripletMarginLoss, _embeddings(3), lambda a, p, n: F.triplet_margin_loss(a, p, n),
         bytes_per_element=24, differentiable=(0, 1, 2), shapes=SHAPES, quick_shapes=QUICK_SHAPES),
    Case("Triplet swap", lambda: fl.TripletMarginLoss(swap=True), _embeddings(3),
         lambda a, p, n: F.triplet_margin_loss(a, p, n, swap=True),
         bytes_per_element=24, differentiable=(0, 1, 2), shapes=SHAPES[1:], quick_shapes=QUICK_SHAPES[1:]),
    Case("TripletDistance cosine", lambda: fl.TripletMarginWithDistanceLoss(distance_function="cosine"),
         _embeddings(3), lambda a, p, n: F.triplet_margin_with_distance_loss(
             a, p, n, distance_function=lambda x, y: 1 - F.cosine_similarity(x, y)),
         bytes_per_element=24, differentiable=(0, 1, 2), shapes=SHAPES[1:], quick_shapes=QUICK_SHAPES[1:]),
    Case("CosineEmbeddingLoss", fl.CosineEmbeddingLoss, _embeddings(2, "sign"),
         lambda a, b, y: F.cosine_embedding_loss(a, b, y), bytes_per_element=16, differentiable=(0, 1),
         shapes=SHAPES, quick_shapes=QUICK_SHAPES),
    Case("ContrastiveLoss", fl.ContrastiveLoss, _embeddings(2, "binary"), torch_contrastive,
         bytes_per_element=16, differentiable=(0, 1), shapes=SHAPES, quick_shapes=QUICK_SHAPES),
    Case("NTXentLoss", fl.NTXentLoss, _embeddings(2), torch_nt_xent, bytes_per_element=0, differentiable=(0, 1),
         shapes=((2048, 256),), quick_shapes=((512, 256),)),
]

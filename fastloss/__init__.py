"""fastloss: loss functions and their gradients in one fused kernel, with torch.nn semantics."""
from . import functional
from ._criterion import Criterion, GradHess, LossAndGrad, Partial
from .evaluate import Evaluation, evaluate
from ._kernels import build_info
from ._kernels.memory import empty_cache
from ._threads import get_num_threads, set_num_threads, threads
from .losses import (CTCLoss, ContrastiveLoss, CosineEmbeddingLoss, NTXentLoss, TripletMarginLoss, TripletMarginWithDistanceLoss,
                     CrossEntropyLoss, DiceLoss, LinearCrossEntropyLoss, MultiLabelMarginLoss, MultiLabelSoftMarginLoss,
                     MultiMarginLoss, NLLLoss, SoftmaxFocalLoss, BCELoss, BCEWithLogitsLoss, GaussianNLLLoss, HingeEmbeddingLoss, HuberLoss,
                     KLDivLoss, L1Loss, MarginRankingLoss, MSELoss, PoissonNLLLoss, SigmoidFocalLoss,
                     SmoothL1Loss, SoftMarginLoss)

__version__ = "0.1.0"
__all__ = [
    "BCELoss", "BCEWithLogitsLoss", "CTCLoss", "ContrastiveLoss", "CosineEmbeddingLoss", "Criterion", "CrossEntropyLoss", "DiceLoss", "Evaluation", "build_info", "GradHess", "Partial", "evaluate", "NLLLoss", "GaussianNLLLoss", "HingeEmbeddingLoss", "HuberLoss",
    "KLDivLoss", "LinearCrossEntropyLoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss",
    "MultiMarginLoss", "NTXentLoss", "empty_cache", "L1Loss", "LossAndGrad", "MSELoss", "MarginRankingLoss", "PoissonNLLLoss",
    "SigmoidFocalLoss", "SmoothL1Loss", "SoftmaxFocalLoss", "SoftMarginLoss", "TripletMarginLoss", "TripletMarginWithDistanceLoss", "functional", "get_num_threads",
    "set_num_threads", "threads",
]

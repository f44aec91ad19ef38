"""The criterion classes, one module per family."""
from .embedding import (
                      ContrastiveLoss,
                      CosineEmbeddingLoss,
                      NTXentLoss,
                      TripletMarginLoss,
                      TripletMarginWithDistanceLoss,
)
from .pointwise import (
                      BCELoss,
                      BCEWithLogitsLoss,
                      GaussianNLLLoss,
                      HingeEmbeddingLoss,
                      HuberLoss,
                      KLDivLoss,
                      L1Loss,
                      MarginRankingLoss,
                      MSELoss,
                      PoissonNLLLoss,
                      SigmoidFocalLoss,
                      SmoothL1Loss,
                      SoftMarginLoss,
)
from .sequence import CTCLoss
from .softmax import (
                      CrossEntropyLoss,
                      DiceLoss,
                      LinearCrossEntropyLoss,
                      MultiLabelMarginLoss,
                      MultiLabelSoftMarginLoss,
                      MultiMarginLoss,
                      NLLLoss,
                      SoftmaxFocalLoss,
)

# criterion class -> the name of its function in fastloss.functional (torch's where torch has one)
FUNCTIONAL_NAMES = {
    L1Loss: "l1_loss",
    MSELoss: "mse_loss",
    SmoothL1Loss: "smooth_l1_loss",
    HuberLoss: "huber_loss",
    SoftMarginLoss: "soft_margin_loss",
    BCELoss: "binary_cross_entropy",
    BCEWithLogitsLoss: "binary_cross_entropy_with_logits",
    PoissonNLLLoss: "poisson_nll_loss",
    GaussianNLLLoss: "gaussian_nll_loss",
    KLDivLoss: "kl_div",
    HingeEmbeddingLoss: "hinge_embedding_loss",
    MarginRankingLoss: "margin_ranking_loss",
    SigmoidFocalLoss: "sigmoid_focal_loss",
    CrossEntropyLoss: "cross_entropy",
    NLLLoss: "nll_loss",
    SoftmaxFocalLoss: "softmax_focal_loss",
    LinearCrossEntropyLoss: "linear_cross_entropy",
    MultiMarginLoss: "multi_margin_loss",
    MultiLabelMarginLoss: "multilabel_margin_loss",
    MultiLabelSoftMarginLoss: "multilabel_soft_margin_loss",
    DiceLoss: "dice_loss",
    TripletMarginLoss: "triplet_margin_loss",
    TripletMarginWithDistanceLoss: "triplet_margin_with_distance_loss",
    CosineEmbeddingLoss: "cosine_embedding_loss",
    ContrastiveLoss: "contrastive_loss",
    CTCLoss: "ctc_loss",
    NTXentLoss: "nt_xent_loss",
}
CRITERIA = tuple(FUNCTIONAL_NAMES)

"""CVNet: global descriptor + correlation-verification re-ranker, and the import of the authors' files."""

from bitseek.models.cvnet.convert import convert_official, depth_of_official, to_official
from bitseek.models.cvnet.model import (CVNet, CVNetConfig, GeM, build_cvnet, combine_scales, gem, regional_gem,
                                        superglobal_config)
from bitseek.models.cvnet.rerank import (CorrelationLearner, CVReranker, cosine_correlation,
                                         cross_scale_correlation, pyramid_size, resize4d)

__all__ = [
    "CVNet",
    "CVNetConfig",
    "CVReranker",
    "CorrelationLearner",
    "GeM",
    "build_cvnet",
    "combine_scales",
    "convert_official",
    "cosine_correlation",
    "cross_scale_correlation",
    "depth_of_official",
    "gem",
    "pyramid_size",
    "regional_gem",
    "resize4d",
    "superglobal_config",
    "to_official",
]

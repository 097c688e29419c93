"""Classic unsupervised hashing baselines (LSH, PCAH, ITQ, SH) on video features or image pixels.

One file per method; importing this package registers all four in :data:`bitseek.registry.MODELS`.
"""

from bitseek.models.shallow.base import ShallowConfig, ShallowHash, pooled_chunks, vectors
from bitseek.models.shallow.itq import ITQ, ITQConfig
from bitseek.models.shallow.lsh import LSH
from bitseek.models.shallow.pcah import PCAH
from bitseek.models.shallow.sh import SpectralHashing

__all__ = ["ShallowConfig", "ITQConfig", "ShallowHash", "LSH", "PCAH", "ITQ", "SpectralHashing",
           "pooled_chunks", "vectors"]

"""What an encoder produces: binary codes (:class:`CodeSet`) and float descriptors (:class:`FeatureSet`).

``bits`` owns everything about bits (sign rules, packing, popcount, Hamming distances); the
evaluator and the index import it from here, so there is one copy of each rule.
"""

from bitseek.codes.bits import (
    ZeroRule,
    as_signed,
    binarize,
    check_packed,
    code_bits,
    hamming,
    pack,
    popcount,
    sign,
    to_bits,
    to_signed,
    unpack,
    words,
    zero_mask,
)
from bitseek.codes.codeset import CodeSet
from bitseek.codes.featureset import FEATURE_DTYPES, FeatureSet

__all__ = [
    "ZeroRule",
    "binarize",
    "sign",
    "to_signed",
    "as_signed",
    "to_bits",
    "pack",
    "unpack",
    "check_packed",
    "code_bits",
    "zero_mask",
    "popcount",
    "words",
    "hamming",
    "CodeSet",
    "FeatureSet",
    "FEATURE_DTYPES",
]

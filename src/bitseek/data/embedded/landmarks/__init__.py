"""``landmarks``: a built-in landmark-retrieval benchmark in the revisitop layout, from real photographs.

The photographs that ship inside scikit-image, scikit-learn, matplotlib and PyWavelets are
"photographed again" by random homographies, crops, zooms, illumination and colour changes, blur,
JPEG compression and occluders; every query's database images are labelled Easy / Hard / Junk from
the geometrically computed visible part of its box (:mod:`.geometry` gives the rule and why). The
result is read by the same loader as Revisited Oxford/Paris (:mod:`bitseek.data.revisited`), with
revisitop1m-style distractors and a disjoint class-per-folder training split beside it. As the
dataset ``landmarks`` (``data: {name: landmarks, size: small}``) it is built on first use.
"""

from bitseek.data.embedded.landmarks.build import (DISTRACTOR_DIR, DISTRACTOR_LIST, MANIFEST, NAME, SIZES, TRAIN_DIR,
                                                   build_landmarks, read_manifest)
from bitseek.data.embedded.landmarks.dataset import LandmarksConfig, load_landmarks

__all__ = ["DISTRACTOR_DIR", "DISTRACTOR_LIST", "MANIFEST", "NAME", "SIZES", "TRAIN_DIR", "LandmarksConfig",
           "build_landmarks", "load_landmarks", "read_manifest"]

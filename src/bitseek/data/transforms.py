"""Image transforms of the DeepHash/CSCE-Net protocol, without torchvision.

The reference pipeline (DeepHash-pytorch ``image_transform``, copied by CSCE-Net) is::

    train: Resize(256) -> RandomHorizontalFlip -> RandomCrop(224) -> ToTensor -> Normalize(ImageNet)
    test:  Resize(256) -> CenterCrop(224)                         -> ToTensor -> Normalize(ImageNet)

torchvision does not import beside the torch used here, so these are re-implemented with Pillow
and numpy following torchvision's rules exactly: the shorter side is resized with bilinear
(antialiased) Pillow resampling and the longer side becomes ``int(size * long / short)``; centre
crops round the offset; random draws use ``torch.rand``/``torch.randint`` in torchvision's order
(flip, then crop row, then crop column), so with the same torch RNG state the crops are the same.
Draws come from an explicit ``torch.Generator`` when one is given, which makes every item's
augmentation reproducible independently of data-loader order and worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bitseek.errors import ConfigError, InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter`` (torchvision's rule)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def resize_shorter(img: Image.Image, shorter: int) -> Image.Image:
    """Resize so the shorter side is ``shorter``; bilinear, as torchvision does for PIL images."""
    size = resized_size(img.width, img.height, shorter)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR)


def center_crop_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """Top-left corner of a centred ``crop`` x ``crop`` window (torchvision rounding)."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def to_normalized_tensor(arr: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W): ``(x / 255 - mean) / std`` (ToTensor + Normalize)."""
    arr = np.require(arr, dtype=np.uint8, requirements=["C", "W"])  # copies only views/read-only
    t = torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(m).div_(s)


@dataclass(frozen=True)
class ImageTransform:
    """PIL RGB image -> normalised float tensor (3, crop, crop).

    ``resize`` is the shorter-side size (0 = keep the size); ``crop`` the square crop size
    (0 = no crop, the DeepHash CIFAR protocol resizes 32x32 images straight to the input size);
    ``train`` selects random crop + optional horizontal flip instead of the centre crop.
    """

    resize: int
    crop: int
    train: bool = False
    hflip: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.resize < 0 or self.crop < 0:
            raise ConfigError(f"resize and crop must be >= 0, got resize={self.resize}, crop={self.crop}")
        if self.resize and self.crop and self.crop > self.resize:
            raise ConfigError(f"crop size {self.crop} is larger than the resize {self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std must have 3 entries and std > 0, got {self.mean}, {self.std}")

    @property
    def random(self) -> bool:
        """Whether the transform draws random numbers (callers only then build a generator)."""
        return self.train and (self.hflip or self.crop > 0)

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.resize:
            img = resize_shorter(img, self.resize)
        arr = np.asarray(img, dtype=np.uint8)
        h, w = arr.shape[:2]
        if self.train and self.hflip and bool(torch.rand(1, generator=generator) < 0.5):
            arr = arr[:, ::-1]
        if self.crop:
            if h < self.crop or w < self.crop:
                raise InputError(f"image of {w}x{h} is smaller than the crop size {self.crop}")
            if self.train:
                top = left = 0
                if (h, w) != (self.crop, self.crop):  # torchvision draws nothing in this case
                    top = int(torch.randint(0, h - self.crop + 1, (1,), generator=generator))
                    left = int(torch.randint(0, w - self.crop + 1, (1,), generator=generator))
            else:
                top, left = center_crop_box(h, w, self.crop)
            arr = arr[top : top + self.crop, left : left + self.crop]
        return to_normalized_tensor(arr, self.mean, self.std)


def protocol_transforms(image_size: int, resize: int, hflip: bool = True) -> tuple[ImageTransform, ImageTransform]:
    """(train, test) transforms of the DeepHash protocol for the given sizes."""
    if image_size <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    if resize < image_size:
        raise ConfigError(f"resize ({resize}) must be >= image_size ({image_size}): the crop is taken after resizing")
    return (
        ImageTransform(resize=resize, crop=image_size, train=True, hflip=hflip),
        ImageTransform(resize=resize, crop=image_size, train=False),
    )


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTransform",
    "center_crop_box",
    "protocol_transforms",
    "resize_shorter",
    "resized_size",
    "to_normalized_tensor",
]

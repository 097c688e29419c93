"""The ``landmarks`` dataset preset: build on first use, then read exactly like ``roxford5k``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bitseek.data.embedded.common import benchmark_root
from bitseek.data.embedded.landmarks.build import NAME, SIZES, build_landmarks, read_manifest
from bitseek.errors import ConfigError
from bitseek.registry import register_dataset

__all__ = ["LandmarksConfig", "load_landmarks"]


@dataclass
class LandmarksConfig:
    """``root`` empty = ``$BITSEEK_DATA_DIR/landmarks-<size>``; ``max_size`` as for ``roxford5k``."""

    name: str = NAME
    root: str = ""
    size: str = "tiny"
    seed: int = 0
    max_size: int = 1024
    batch_size: int = 1


@register_dataset(NAME, LandmarksConfig)
def load_landmarks(cfg: LandmarksConfig) -> Any:
    """RetrievalData of the built-in landmark benchmark (queries cropped to ``bbx``, gnd as relevance)."""
    from bitseek.data.revisited import RevisitedConfig, load_revisited

    if cfg.size not in SIZES:
        raise ConfigError(f"{NAME}.size: must be one of {', '.join(SIZES)}, got {cfg.size!r}")
    root = build_landmarks(benchmark_root(f"{NAME}-{cfg.size}", cfg.root), size=cfg.size, seed=cfg.seed)
    data = load_revisited(RevisitedConfig(name=NAME, root=str(root / NAME), max_size=cfg.max_size,
                                          batch_size=cfg.batch_size))
    man = read_manifest(root)
    data.info.update(dataset=NAME, size=cfg.size, seed=cfg.seed, build_root=str(root), labels=man["labels"],
                     source="photographs inside the scikit-image, scikit-learn, matplotlib and PyWavelets wheels, "
                            "re-photographed locally")
    return data

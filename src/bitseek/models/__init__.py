"""Models: deep hashing models (``encode`` -> codes), embedders (``embed`` -> float rows), baselines."""

from bitseek.models.base import Embedder, HashModel, TrainableModel, output_kind

__all__ = ["HashModel", "Embedder", "TrainableModel", "output_kind"]

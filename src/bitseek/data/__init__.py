"""Data sources and datasets: real on-disk formats read lazily, presets, built-in benchmarks."""

from bitseek.data.base import RetrievalData, load_data

__all__ = ["RetrievalData", "load_data"]

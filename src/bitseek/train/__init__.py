"""The one training engine, checkpoint I/O and dataset encoding."""

from bitseek.train.checkpoint import load_model, save_model
from bitseek.train.encode import encode_dataset
from bitseek.train.engine import Trainer, resolve_device

__all__ = ["Trainer", "encode_dataset", "load_model", "save_model", "resolve_device"]

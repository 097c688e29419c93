"""Models: every method exposes ``encode()`` and (deep models) ``training_step()``."""

from bitseek.models.base import HashModel

__all__ = ["HashModel"]

"""Losses, one small module each."""

from bitseek.losses.dcl import dcl_loss, negative_mask
from bitseek.losses.reconstruction import mse_reconstruction

__all__ = ["dcl_loss", "mse_reconstruction", "negative_mask"]

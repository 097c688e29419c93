"""Reusable building blocks for the hashing models."""

from bitseek.models.layers.binarize import BinaryTanh, binarize_ste
from bitseek.models.layers.position import sinusoid_table
from bitseek.models.layers.transformer import Attention, Block, Mlp, xavier_init_

__all__ = ["Attention", "BinaryTanh", "Block", "Mlp", "binarize_ste", "sinusoid_table", "xavier_init_"]

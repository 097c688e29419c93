"""Encode a dataset into codes with any model that has ``encode(batch)``.

Codes stay on the device until the end (one host transfer), so a GPU never waits on the host
between batches. Works for deep models (``torch.nn.Module``) and the shallow baselines alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bitseek.train.engine import resolve_device, resolve_precision, to_device


def encode_dataset(model: Any, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "auto",
                   num_workers: int = 0, progress: bool = False, desc: str = "encode") -> np.ndarray:
    """Return float32 (n, bits) codes in {-1, 0, +1} in dataset order."""
    dev = resolve_device(device) if isinstance(device, str) else device
    is_module = isinstance(model, torch.nn.Module)
    if is_module:
        model.to(dev).eval()
    amp = resolve_precision("auto", dev) if is_module else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    it: Any = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True, leave=False)
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for batch in it:
            batch = to_device(batch, dev) if is_module else batch
            if amp is not None:
                with torch.autocast(dev.type, dtype=amp):
                    codes = model.encode(batch)
            else:
                codes = model.encode(batch)
            out.append(torch.as_tensor(codes).float())
    if not out:
        raise ValueError("encode_dataset: the dataset is empty")
    return torch.cat([o.to(out[0].device) for o in out]).cpu().numpy().astype(np.float32)

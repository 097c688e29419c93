"""Inference: a trained model over a dataset, batched, in the configured precision (fp32 by default).

``encode_dataset`` gives codes (``HashModel.encode`` / shallow baselines), ``embed_dataset``
float descriptors (``Embedder.embed``); ``extract`` picks by :func:`bitseek.models.output_kind`.
Encoding lives outside ``train/`` because it is inference: it needs devices, not the trainer.
"""

from bitseek.encode.extract import (
    INFERENCE_PRECISIONS,
    embed_dataset,
    encode_dataset,
    extract,
    inference_dtype,
    save_extracted,
)

__all__ = ["encode_dataset", "embed_dataset", "extract", "save_extracted", "inference_dtype", "INFERENCE_PRECISIONS"]

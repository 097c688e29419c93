"""Ingest a folder of videos and images into a collection (``bitseek ingest SRC... --collection DIR``).

``walk`` finds the files, ``run`` drives each through decode -> features -> catalog -> index,
``models`` turns frame features into index vectors or codes, ``features`` writes the SSVH HDF5
export that ``bitseek train`` reads (dataset ``collection``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ingest", "IngestReport"]


def __getattr__(name: str) -> Any:  # lazy: bitseek.collection imports ingest.models, run imports collection
    if name in __all__:
        from bitseek.ingest import run

        return getattr(run, name)
    raise AttributeError(name)

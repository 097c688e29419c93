"""HTTP service and web page over a collection (``bitseek serve``; needs the ``serve`` extra).

``build_app(collection, ServeSettings(...))`` gives the FastAPI app; ``serve(...)`` runs it on uvicorn.
Submodules are imported on first use so ``import bitseek.serve.sniff`` works without FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "ServeSettings", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("build_app", "ServeSettings"):
        from bitseek.serve import app

        return getattr(app, name)
    if name == "serve":
        from bitseek.serve.server import serve

        return serve
    raise AttributeError(name)

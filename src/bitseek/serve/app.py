"""The HTTP service over a collection: FastAPI routes, validation, limits and the search worker pool.

The app never opens files of the collection itself: it calls the same :class:`bitseek.collection.Collection`
methods as the CLI, injected into :func:`build_app`, so tests and other deployments can hand it any object
with that interface. Searches (decode + encode + index) block, so they run on a bounded thread pool
(the collection's search is thread-safe), with a deadline per request and a bounded wait for a free worker.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol, TypeVar

from fastapi import Depends, FastAPI, File, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bitseek.errors import BitseekError, InputError
from bitseek.serve.limits import BodyLimit, BodyTooLarge, too_large_message
from bitseek.serve.sniff import ACCEPTED, HEAD_BYTES, Sniffed, describe, sniff

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ID = 2**63 - 1


class CollectionLike(Protocol):
    """What the service needs of a collection (``bitseek.collection.Collection`` has it)."""

    def search_image(self, img: Any, k: int = 10, radius: float | None = None) -> list[Any]: ...
    def search_video(self, path: Any, k: int = 10, radius: float | None = None) -> list[Any]: ...
    def search_id(self, item_id: int, k: int = 10, radius: float | None = None) -> list[Any]: ...
    def item(self, item_id: int) -> dict[str, Any]: ...
    def thumbnail(self, item_id: int) -> bytes: ...
    def __len__(self) -> int: ...


def _default_workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


@dataclass
class ServeSettings:
    """Limits and options of one server; every one is a flag of ``bitseek serve``."""

    max_upload_bytes: int = 200 * 2**20
    max_k: int = 1000
    default_k: int = 10
    timeout_s: float = 60.0          # decode + search of one request, from the moment a worker takes it
    queue_timeout_s: float = 30.0    # wait for a free worker before answering 503
    workers: int = field(default_factory=_default_workers)
    max_image_pixels: int = 50_000_000
    token: str | None = None
    temp_dir: str | None = None

    def __post_init__(self) -> None:
        checks = [("max_upload_bytes", self.max_upload_bytes >= 1024, "at least 1 KiB"),
                  ("max_k", self.max_k >= 1, "at least 1"),
                  ("default_k", 1 <= self.default_k <= self.max_k, f"between 1 and max_k={self.max_k}"),
                  ("timeout_s", self.timeout_s > 0 and math.isfinite(self.timeout_s), "a positive number"),
                  ("queue_timeout_s", self.queue_timeout_s > 0 and math.isfinite(self.queue_timeout_s),
                   "a positive number"),
                  ("workers", self.workers >= 1, "at least 1"),
                  ("max_image_pixels", self.max_image_pixels >= 1, "at least 1")]
        for name, ok, want in checks:
            if not ok:
                raise InputError(f"serve: {name}={getattr(self, name)!r} must be {want}")
        if self.token is not None and not self.token.strip():
            raise InputError("serve: --token is empty; give a non-empty token or leave it out")


class _Busy(Exception):
    pass


class _Deadline(Exception):
    pass


class SearchPool:
    """A fixed set of worker threads; a request waits a bounded time for one, then runs with a deadline.

    A job that passes its deadline is answered at once (503) but keeps its worker until it returns
    (Python cannot stop a thread), so stuck decodes occupy at most ``workers`` threads and later
    requests see "busy" instead of piling up threads without bound.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bitseek-serve")
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = 0

    def _semaphore(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        # uvicorn serves from one event loop; the slots belong to the loop that first used them
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.workers), loop
        return self._sem

    async def run(self, fn: Callable[[], T], timeout: float, queue_timeout: float) -> T:
        loop = asyncio.get_running_loop()
        sem = self._semaphore(loop)
        try:
            await asyncio.wait_for(sem.acquire(), queue_timeout)
        except asyncio.TimeoutError:
            raise _Busy() from None

        def job() -> T:
            self.running += 1
            try:
                return fn()
            finally:
                self.running -= 1
                loop.call_soon_threadsafe(sem.release)

        try:
            fut = loop.run_in_executor(self._pool, job)
        except BaseException:
            sem.release()
            raise
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late failure is not "never retrieved"
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise _Deadline() from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _static_dir() -> Path:
    return Path(str(resources.files("bitseek.serve") / "static"))


def _docs_assets() -> Path | None:
    """Swagger UI's files from the ``fastapi-offline`` wheel, so /docs works with no CDN."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


def _json_safe(value: Any) -> Any:
    """Catalog values as JSON: numpy scalars/arrays to Python, bytes (e.g. a thumbnail blob) left out."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if not isinstance(v, (bytes, bytearray, memoryview))}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _hit_json(hit: Any) -> dict[str, Any]:
    d = asdict(hit) if hasattr(hit, "__dataclass_fields__") else dict(hit)
    d = _json_safe(d)
    d["thumbnail"] = f"/api/items/{int(d['id'])}/thumbnail"
    return d


_PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
             "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")


def build_app(collection: CollectionLike, settings: ServeSettings | None = None,
              on_shutdown: Callable[[], None] | None = None) -> FastAPI:
    """The FastAPI app serving ``collection`` under ``settings`` (``on_shutdown`` e.g. closes it)."""
    from bitseek import __version__

    s = settings or ServeSettings()
    pool = SearchPool(s.workers)
    docs_assets = _docs_assets()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="bitseek", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search a bitseek collection by example (image or video upload) or by item id. "
                              "Send `Authorization: Bearer <token>` when the server was started with a token.")
    app.state.collection = collection
    app.state.settings = s
    app.state.pool = pool

    # ------------------------------------------------------------------ errors: one clear sentence each
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _caused_by(exc, BodyTooLarge):  # raised while FastAPI parsed the multipart body
            return JSONResponse({"detail": too_large_message(s.max_upload_bytes)}, status_code=413,
                                headers={"connection": "close"})
        return await http_exception_handler(request, exc)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/docs"):
            response.headers.setdefault("Content-Security-Policy", _PAGE_CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    app.add_middleware(BodyLimit, limit=s.max_upload_bytes)

    # ------------------------------------------------------------------ dependencies
    def get_collection(request: Request) -> CollectionLike:
        return request.app.state.collection

    def check_token(request: Request) -> None:
        if s.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), s.token.encode()):
            raise HTTPException(401, "missing or wrong token: send the header 'Authorization: Bearer <token>' "
                                     "with the token the server was started with",
                                headers={"WWW-Authenticate": "Bearer"})

    K = Query(s.default_k, ge=1, le=s.max_k, description=f"number of results, 1..{s.max_k}")
    RADIUS = Query(None, allow_inf_nan=False,
                   description="near-duplicate search: every item within this distance (Hamming for codes; "
                               "for float features, at least this score), at most k of them")
    ITEM = PathParam(..., ge=0, le=MAX_ID, description="an item id of the collection")

    async def run_search(fn: Callable[[], T], what: str) -> T:
        try:
            return await pool.run(fn, s.timeout_s, s.queue_timeout_s)
        except _Refused as e:
            raise HTTPException(422, str(e)) from None
        except _Busy:
            raise HTTPException(503, f"all {s.workers} search workers stayed busy for {s.queue_timeout_s:g} s; "
                                     "retry later (or start the server with more --workers)",
                                headers={"Retry-After": "5"}) from None
        except _Deadline:
            raise HTTPException(503, f"{what} took longer than the {s.timeout_s:g} s limit (--timeout); "
                                     "send a shorter clip or a smaller image",
                                headers={"Retry-After": "30"}) from None

    async def require_item(col: CollectionLike, item_id: int) -> dict[str, Any]:
        try:
            return await run_in_threadpool(col.item, item_id)
        except (KeyError, LookupError, BitseekError):
            raise HTTPException(404, f"no item with id {item_id} in this collection") from None

    def results(hits: list[Any], query: dict[str, Any], k: int, radius: float | None, t0: float) -> dict[str, Any]:
        return {"query": query, "k": k, "radius": radius, "count": len(hits),
                "took_ms": round((time.perf_counter() - t0) * 1000, 3), "results": [_hit_json(h) for h in hits]}

    # ------------------------------------------------------------------ routes
    @app.get("/healthz", tags=["service"], summary="liveness: the collection answers")
    async def healthz(col: CollectionLike = Depends(get_collection)) -> dict[str, Any]:
        n = await run_in_threadpool(len, col)
        return {"status": "ok", "items": int(n), "busy_workers": pool.running, "workers": pool.workers}

    api = [Depends(check_token)]

    @app.get("/api/info", tags=["collection"], dependencies=api, summary="size of the collection and the limits")
    async def info(col: CollectionLike = Depends(get_collection)) -> dict[str, Any]:
        n = await run_in_threadpool(len, col)
        return {"items": int(n), "default_k": s.default_k, "max_k": s.max_k,
                "max_upload_bytes": s.max_upload_bytes, "timeout_s": s.timeout_s, "accepted": ACCEPTED}

    @app.post("/api/search", tags=["search"], dependencies=api,
              summary="search by example: upload an image or a video (multipart field 'file')",
              responses={413: {"description": "upload over the size limit"},
                         415: {"description": "not an image or video this server decodes"},
                         422: {"description": "bad parameter, or the file does not decode"},
                         503: {"description": "busy, or decoding took too long"}})
    async def search_upload(file: UploadFile = File(..., description="the query image or video"),
                            k: int = K, radius: float | None = RADIUS,
                            col: CollectionLike = Depends(get_collection)) -> dict[str, Any]:
        t0 = time.perf_counter()
        name = Path(file.filename or "upload").name[:200] or "upload"
        head = await file.read(HEAD_BYTES)
        kind = sniff(head)
        if kind is None:
            raise HTTPException(415, f"{name}: the content is {describe(head)}, not a supported image or video "
                                     f"(accepted: {ACCEPTED}); the type is read from the bytes, not the name")
        await file.seek(0)
        path = await run_in_threadpool(_spool, file, kind, s.temp_dir)
        hits = await run_search(lambda: _search_file(col, path, kind, k, radius, s.max_image_pixels, name),
                                f"decoding and searching {name}")
        return results(hits, {"upload": name, "kind": kind.kind, "format": kind.format}, k, radius, t0)

    @app.get("/api/items/{item_id}/similar", tags=["search"], dependencies=api,
             summary="search by an item of the collection")
    async def search_item(item_id: int = ITEM, k: int = K, radius: float | None = RADIUS,
                          col: CollectionLike = Depends(get_collection)) -> dict[str, Any]:
        t0 = time.perf_counter()
        await require_item(col, item_id)
        hits = await run_search(lambda: _checked(col.search_id, item_id, k=k, radius=radius),
                                f"searching by item {item_id}")
        return results(hits, {"id": item_id}, k, radius, t0)

    @app.get("/api/items/{item_id}", tags=["collection"], dependencies=api, summary="an item's catalog metadata")
    async def item(item_id: int = ITEM, col: CollectionLike = Depends(get_collection)) -> dict[str, Any]:
        meta = _json_safe(await require_item(col, item_id))
        meta["thumbnail"] = f"/api/items/{item_id}/thumbnail"
        return meta

    @app.get("/api/items/{item_id}/thumbnail", tags=["collection"], dependencies=api,
             summary="an item's thumbnail (JPEG)", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item_id: int = ITEM, col: CollectionLike = Depends(get_collection)) -> Response:
        try:
            data = await run_in_threadpool(col.thumbnail, item_id)
        except (KeyError, LookupError, BitseekError):
            raise HTTPException(404, f"no thumbnail for id {item_id} in this collection") from None
        return Response(bytes(data), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------------ the web page and the docs
    static = _static_dir()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=static), name="static")

    if docs_assets is not None:
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=docs_assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="bitseek API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon.png")
    return app


def _spool(upload: UploadFile, kind: Sniffed, temp_dir: str | None) -> str:
    """Copy the upload to a named temp file (decoders take paths); the suffix comes from the sniffed type."""
    fd, path = tempfile.mkstemp(prefix="bitseek-query-", suffix=kind.suffix, dir=temp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _checked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a collection call, marking its refusals of the request so the route answers 422, not 500."""
    try:
        return fn(*args, **kwargs)
    except (BitseekError, KeyError) as e:
        raise _Refused(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from e


class _Refused(Exception):
    """The collection refused a request's input (bad parameter, undecodable file): a 422."""


def _search_file(col: CollectionLike, path: str, kind: Sniffed, k: int, radius: float | None,
                 max_pixels: int, name: str) -> list[Any]:
    """Decode-check and search one spooled upload; the temp file is removed whatever happens."""
    try:
        if kind.kind == "image":
            _check_pixels(path, max_pixels, name)
            return _checked(col.search_image, Path(path), k=k, radius=radius)
        return _checked(col.search_video, Path(path), k=k, radius=radius)
    except _Refused as e:
        raise _Refused(str(e).replace(path, name)) from e.__cause__
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _check_pixels(path: str, max_pixels: int, name: str) -> None:
    """Refuse an image whose header declares more pixels than allowed, before anything decodes it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _Refused(f"{name}: not a readable image ({e.__class__.__name__}: {e})".replace(path, name)) from e
    except Image.DecompressionBombError as e:
        raise _Refused(f"{name}: image declares too many pixels ({e})") from e
    if w * h > max_pixels:
        raise _Refused(f"{name}: image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
                       "(--max-image-pixels)")

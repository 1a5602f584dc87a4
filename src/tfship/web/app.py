"""The page and its JSON API, on Starlette (small, well kept, ASGI; multipart parsing by python-multipart, served by
uvicorn). The browser only ever talks to this app; the model server stays behind it on gRPC.

  GET  /                 the page (static HTML, script and style from this package: no CDN)
  GET  /api/models       deployed models: the image classifiers, and the others with the reason they do not qualify
  POST /api/classify     multipart form: `model`, `image` (a file) -> top classes, version, replica, latency
  GET  /healthz          the process is up (liveness)
  GET  /readyz           the model server answers metadata within the timeout (readiness)
Every failure is JSON `{"error": "Error: ... (hint: ...)"}` with a 4xx/5xx status; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tfship.web import imaging
from tfship.web.model_client import Classifier, ModelClient, WebError, this_host
from tfship.web.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("tfship.web")


def error_response(error: WebError) -> JSONResponse:
    return JSONResponse({"error": error.one_line()}, status_code=error.status)


def create_app(settings: Settings) -> Starlette:
    client = ModelClient(settings.model_server, settings.timeout, dict(settings.pixel_max))
    web_pod = this_host()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def models(request: Request) -> Response:
        catalog = await asyncio.to_thread(client.catalog, list(settings.models))
        return JSONResponse({
            "classifiers": [
                {"name": m.name, "version": m.version, "input": input_text(m), "api": m.api}
                for m in catalog.classifiers.values()
            ],
            "others": [{"name": m.name, "reason": m.reason} for m in catalog.unusable.values()],
            "unreachable": catalog.unreachable,
            "max_upload_bytes": settings.max_upload_bytes,
        })

    async def classify(request: Request) -> Response:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise WebError("the upload has no Content-Length", "send the image as a normal form upload", status=411)
        if int(declared) > settings.max_upload_bytes + 64 * 1024:  # room for the form's own fields
            raise too_large(int(declared), settings.max_upload_bytes)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as error:  # python-multipart's and Starlette's parse errors have no common base
            raise WebError(f"the upload is not a valid form: {error}", "send multipart/form-data", status=400)
        try:
            name = str(form.get("model") or "")
            upload = form.get("image")
            if not name:
                raise WebError("no model chosen", "pick a model from the list", status=400)
            if upload is None or isinstance(upload, str):
                raise WebError("no image in the upload", "choose a file or draw a digit", status=400)
            data = await upload.read(settings.max_upload_bytes + 1)
            filename = upload.filename or "upload"
        finally:
            await form.close()  # the spooled upload file
        if len(data) > settings.max_upload_bytes:
            raise too_large(len(data), settings.max_upload_bytes)
        answer, model, seen = await asyncio.to_thread(run_classification, client, name, data, filename)
        return JSONResponse({
            "model": answer.model,
            "version": answer.version,
            "classes": [{"label": label, "score": score} for label, score in answer.classes],
            "replica": answer.replica or web_pod,
            "replica_source": "model server" if answer.replica else "web pod (the model server did not say)",
            "latency_ms": round(answer.latency_ms, 2),
            "total_ms": round((time.perf_counter() - started) * 1000, 2),
            "model_input": {"height": model.image.height, "width": model.image.width,
                            "channels": model.image.channels, "pixel_max": model.image.pixel_max, "values": seen},
        })

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        catalog = await asyncio.to_thread(client.catalog, list(settings.models))
        if not catalog.server_answered:
            reasons = "; ".join(catalog.unreachable) or "Error: no model names configured"
            return JSONResponse({"ready": False, "error": reasons}, status_code=503)
        return JSONResponse({"ready": True, "classifiers": sorted(catalog.classifiers)})

    async def on_web_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, WebError)
        log.info("%s %s -> %d %s", request.method, request.url.path, error.status, error.one_line())
        return error_response(error)

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return error_response(WebError(f"{request.method} {request.url.path}: {error.detail}",
                                       "open the page at /", status=error.status_code))

    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return error_response(WebError("the web app failed unexpectedly", "see the web pod's log", status=500))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        client.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/models", models),
            Route("/api/classify", classify, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={WebError: on_web_error, HTTPException: on_http_error, Exception: on_unexpected},
        lifespan=lifespan,
    )
    return app


def run_classification(client: ModelClient, name: str, data: bytes, filename: str):
    """Decode, convert for the model, classify: (answer, model, the pixel values the model saw)."""
    image = imaging.decode(data, filename)
    model = client.describe(name)
    if not isinstance(model, Classifier):
        raise WebError(f"model '{name}' does not classify images: {model.reason}",
                       "pick an image classification model such as digits", status=422)
    pixels = imaging.to_model_input(image, model.image, filename)
    return client.classify(model, pixels), model, [round(value, 3) for value in pixels]


def too_large(size: int, limit: int) -> WebError:
    return WebError(f"the upload is {size:,} bytes, over the limit of {limit:,}",
                    "scale the image down or save it as JPEG", status=413)


def input_text(model: Classifier) -> str:
    kind = "grayscale" if model.image.channels == 1 else "RGB"
    return f"{model.image.height}x{model.image.width} {kind}, 0..{model.image.pixel_max:g}"

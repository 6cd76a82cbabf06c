"""An HTTP service over the default serving chain (facemask.load), and a page that shows it
on a photo or the camera.

    facemask serve models/model.safetensors      # then open http://127.0.0.1:8000/

`create_app` loads the model once. POST /predict answers one picture (multipart field
`file`, or the picture as the raw body) with its faces as JSON; GET /health and GET /model
say the service is up and what it runs; GET / is the page (page.html beside this file).

Decoding and prediction run in one worker thread: concurrent requests queue there in
arrival order, torch keeps the threads the process set, and the event loop stays free to
read uploads and answer /health meanwhile. A bad upload is a 4xx naming the problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from facemask.api import FaceMaskModel, load
from facemask.data.images import to_rgb
from facemask.detection.factory import finder_beside, read_finder
from facemask.serving.annotate import UNCERTAIN
from facemask.serving.stream import Face

MAX_BYTES = 20 * 2**20  # a phone photo is 2-10 MB
MAX_PIXELS = 50_000_000  # 50 MP: 150 MB of RGB while it is decoded
READ_TIMEOUT = 60.0  # s to receive a whole upload: a stalled client does not hold memory
# Multipart framing (boundaries, part headers) around the file; the file itself gets max_bytes.
FORM_SLACK = 16 * 2**10
# Past the limit, up to this many times it is still read (and dropped) before the 413, so
# the client is done sending and reads the answer instead of a reset connection.
DRAIN_FACTOR = 4
FIELD = "file"
# On an answer sent before the body was read: the rest of it is not the next request.
CLOSE = {"Connection": "close"}


def create_app(
    model_path: str | os.PathLike,
    *,
    detector: str | None = "finder",
    finder: str | os.PathLike | None = None,
    threshold: float | None = None,
    upscale: float | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    read_timeout: float = READ_TIMEOUT,
    batch_size: int = 16,
) -> FastAPI:
    """The service for the model at `model_path`, loaded here, once.

    `detector`, `finder`, `threshold`, `upscale`: as facemask.load takes them (`finder`: the
    finder file beside the model; None: every picture is one face crop). A missing or bad
    model or finder file raises ValueError (ModelLoadError) naming it.
    """
    # An ONNX export (stage export: models/model.onnx) runs on ONNX Runtime, its finder file
    # beside it as for the .safetensors.
    engine = "onnx" if Path(model_path).suffix == ".onnx" else "torch"
    model = load(model_path, engine, detector=detector, threshold=threshold, upscale=upscale,
                 finder=finder, batch_size=batch_size)  # fmt: skip
    # One picture through the chain now: the first user does not wait for torch's lazy start
    # (0.6 s of a 4 ms answer here), and a chain that cannot answer fails at start-up.
    model.predict([np.full((64, 64, 3), 128, np.uint8)])
    info = model_info(model, model_path, detector, finder, threshold, upscale)
    info["limits"] = {"max_bytes": max_bytes, "max_pixels": max_pixels}
    page = resources.files("facemask.serving").joinpath("page.html").read_text(encoding="utf-8")
    # One thread: predictions queue instead of competing for the cores torch already uses,
    # and the detector (YuNet's worker process, a pipe) is never called by two at once.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facemask-predict")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        worker.shutdown(wait=True, cancel_futures=True)  # the running answer, no queued ones
        close = getattr(model.detector, "close", None)
        if close is not None:
            close()  # YuNet's worker process ends with the service

    # No /docs: FastAPI's API pages load their scripts from a CDN.
    app = FastAPI(title="facemask", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    async def about() -> dict:
        return info

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            data = await read_upload(request, max_bytes, read_timeout)
        except ClientDisconnect:  # gone mid-upload: nobody reads an answer
            return Response(status_code=400)
        t1 = time.perf_counter()
        job = partial(answer, model, data, max_pixels, t1)
        result = await asyncio.get_running_loop().run_in_executor(worker, job)
        result["timings_ms"]["upload"] = _ms(t0, t1)
        result["model"] = {"name": info["name"], "version": info["version"]}
        return JSONResponse(result)

    return app


def model_info(
    model: FaceMaskModel,
    path: str | os.PathLike,
    detector: str | None,
    finder: str | os.PathLike | None,
    threshold: float | None,
    upscale: float | None,
) -> dict:
    """What GET /model says: the card's fields, the face finder's settings, the version."""
    card = model.engine.card
    if detector == "finder":
        found = read_finder(finder if finder is not None else finder_beside(path))
        finds: dict | None = found.model_dump(exclude={"format"})
    elif detector is None:
        finds = None  # every picture is one face crop
    else:  # None: the detector's own, or the finder file's where that file names it
        finds = {"detector": detector, "threshold": threshold, "upscale": upscale}
    return {
        "name": card.model,
        "classes": list(card.classes),
        "image_size": card.image_size,
        "abstain": getattr(card, "abstain", 0.0),
        "temperature": getattr(card, "temperature", 1.0),
        "margin": model.margin,
        "finder": finds,
        "version": file_version(path),
    }


def file_version(path: str | os.PathLike) -> str:
    """The first 12 hex digits of the file's sha256: which model answered."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:12]


async def read_upload(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The picture's bytes: the multipart field `file`, else the whole body."""
    is_form = request.headers.get("content-type", "").startswith("multipart/form-data")
    body = await read_body(request, max_bytes, timeout, FORM_SLACK if is_form else 0)
    if not is_form:
        return body

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:  # parsed from the bytes read above: the size limit held while they arrived
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except StarletteHTTPException as err:  # starlette's 400, naming the problem
        raise HTTPException(400, f"malformed multipart body: {err.detail}") from None
    except Exception as err:  # python-multipart's own errors, should one get through
        raise HTTPException(400, f"malformed multipart body: {err}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, f"the multipart body has no file field {FIELD!r}")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise HTTPException(413, _too_big(len(data), max_bytes))
    return data


async def read_body(request: Request, max_bytes: int, timeout: float, framing: int = 0) -> bytes:
    """The request body, at most `max_bytes` (+ `framing`): 413 beyond, 408 after `timeout` s.

    A body over the limit is still read (and dropped) up to DRAIN_FACTOR times the limit,
    so that the client finishes sending and reads the 413 rather than a reset connection.
    """
    limit = max_bytes + framing
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"bad Content-Length {declared!r}")
    if declared is not None and int(declared) > DRAIN_FACTOR * limit:
        raise HTTPException(413, _too_big(int(declared), max_bytes), CLOSE)
    chunks, size, whole = [], 0, True
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > DRAIN_FACTOR * limit:
                    whole = False
                    break
                if size <= limit:
                    chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"upload not received within {timeout:g} s", CLOSE) from None
    if size > limit:
        raise HTTPException(413, _too_big(size, max_bytes, exact=whole), None if whole else CLOSE)
    return b"".join(chunks)


def _too_big(size: int, limit: int, exact: bool = True) -> str:
    what = f"{size:,} bytes" if exact else f"over {DRAIN_FACTOR * limit:,} bytes"
    return f"upload is {what}; this service takes pictures of at most {limit:,} (--max-bytes)"


def decode_picture(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded picture as HxWx3 uint8, EXIF-rotated, as facemask.data.images reads files
    (from memory here: an upload is never written to disk). Bad ones are HTTPExceptions."""
    if not data:
        raise HTTPException(400, "empty upload (0 bytes): send a picture")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size  # from the header: refused before any pixel is decoded
            if w * h > max_pixels:
                raise HTTPException(413, _too_many(w, h, max_pixels))
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise HTTPException(422, "not a picture: no image format PIL reads") from None
    except Image.DecompressionBombError as err:
        raise HTTPException(413, f"decompression bomb: {err}") from None
    except OSError as err:  # PIL's word for truncated and corrupt data
        raise HTTPException(422, f"corrupt or truncated picture: {err}") from None
    except (SyntaxError, ValueError, TypeError, EOFError) as err:
        raise HTTPException(422, f"corrupt picture data: {err}") from None
    return np.asarray(rgb)


def _too_many(w: int, h: int, limit: int) -> str:
    return (
        f"picture is {w}x{h} = {w * h:,} pixels; this service takes at most {limit:,}"
        " (--max-pixels)"
    )


def answer(model: FaceMaskModel, data: bytes, max_pixels: int, queued: float) -> dict:
    """Decode and predict one upload (in the worker thread): the JSON answer, less the model."""
    t0 = time.perf_counter()
    rgb = decode_picture(data, max_pixels)
    t1 = time.perf_counter()
    (faces,) = model.predict([rgb])
    t2 = time.perf_counter()
    return {
        "faces": [face_json(f, model.classes) for f in faces],
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "timings_ms": {"queue": _ms(queued, t0), "decode": _ms(t0, t1), "predict": _ms(t1, t2)},
    }


def face_json(face: Face, classes: list[str]) -> dict:
    probs = [float(p) for p in face.probs]
    return {
        "box": [round(float(v), 2) for v in face.box],
        "label": face.label,
        "confidence": max(probs),
        "probs": dict(zip(classes, probs, strict=True)),
        "uncertain": face.label == UNCERTAIN,
        "detector_score": float(face.score),
    }


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1000, 2)

"""The HTTP contract (FastAPI) over a :class:`RollService`; the web page (theremin/web/) is served at ``/``.

    POST /api/rolls            multipart: file `prompt` (or `demo_prompt`), SamplingSettings fields, `preset`
    GET  /api/rolls/{id}       a roll again (its JSON)
    GET  /api/rolls/{id}/{f}   its files: prompt.mid, variation_NN.mid / .wav / .png
    POST /api/continue         raw MIDI body → one continuation (audio/midi); settings as query parameters
    GET  /api/model  /api/health  /api/prompts  /api/prompts/{name}.mid  /docs

Every error is JSON ``{"detail": "<message naming the field or file>"}`` with a 4xx status: 400 unknown or
malformed fields, 404 unknown roll/file, 413 too large, 415 wrong content type, 422 a value or prompt that
cannot be used, 429 queue full (with Retry-After), 503 a roll past its time limit (with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

from theremin.errors import ThereminError
from theremin.serve.engine import RollTimeout
from theremin.serve.forms import SETTINGS_FIELDS, FieldError, UnknownFieldError
from theremin.serve.service import Busy, RollService
from theremin.serve.store import MEDIA_TYPES, NotFound

log = logging.getLogger("theremin.serve")
WEB = Path(__file__).resolve().parent.parent / "web"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the settings fields, on top of the prompt file


class TooLarge(ThereminError):
    pass


class WrongType(ThereminError):
    pass


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes (413), by its Content-Length when it has
    one, else while it streams in, before the whole body is read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _error(413, f"request body of {length.decode(errors='replace')} bytes is over the "
                                     f"limit of {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(f"request body over the limit of {self.limit} bytes")
            return message

        return await self.app(scope, counted, send)


def _error(status: int, detail: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


ROLL_FORM = {  # the OpenAPI description of POST /api/rolls' form (the route parses the form itself)
    "requestBody": {"required": False, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "format": "binary", "description": "the prompt MIDI file"},
            "demo_prompt": {"type": "string", "description": "a built-in prompt (GET /api/prompts) instead"},
            "preset": {"type": "string", "description": "a sampling preset of conf/sampling/ (default: default)"},
            "n": {"type": "integer"}, "length": {"type": "number"},
            "unit": {"type": "string", "enum": ["notes", "bars", "seconds"]},
            "temperature": {"type": "number"}, "top_k": {"type": "integer"}, "top_p": {"type": "number"},
            "min_p": {"type": "number"}, "seed": {"type": "integer"}, "keep_bars": {"type": "integer"},
            "key": {"type": "string", "example": "D dorian"},
            "pitch_range": {"type": "string", "example": "48,84"},
            "max_polyphony": {"type": "integer"}, "max_new_tokens": {"type": "integer"},
            "register_margin": {"type": "integer", "description": "semitones around the prompt's range (none: off)"},
        }}}}},
}


CONTINUE_BODY = {  # the OpenAPI description of POST /api/continue's body (the route reads the raw body)
    "requestBody": {"required": True, "content": {"audio/midi": {"schema": {"type": "string", "format": "binary"}}}},
}


def create_app(service: RollService) -> FastAPI:
    app = FastAPI(title="theremin", summary="Roll musical ideas from a MIDI prompt.",
                  description=__doc__, version="0.1.0")
    app.add_middleware(BodyLimit, limit=service.cfg.max_upload_bytes + FORM_OVERHEAD)
    app.state.service = service
    _add_error_handlers(app, service)
    _add_info_routes(app, service)
    _add_roll_routes(app, service)
    _add_continue_route(app, service)
    if WEB.is_dir():
        app.mount("/", StaticFiles(directory=WEB, html=True), name="web")
    return app


def _add_error_handlers(app: FastAPI, service: RollService) -> None:
    """Every error as JSON ``{"detail": ...}``: the user's with its 4xx status, a timeout 503, a bug 500."""

    @app.exception_handler(ThereminError)
    async def user_error(request: Request, e: ThereminError):
        if isinstance(e, Busy):
            return _error(429, str(e), e.retry_after)
        status = {UnknownFieldError: 400, NotFound: 404, TooLarge: 413, WrongType: 415}.get(type(e), 422)
        return _error(status, str(e))

    @app.exception_handler(RollTimeout)
    async def timeout(request: Request, e: RollTimeout):
        return _error(503, f"{e} ({service.cfg.timeout_s:g} s): the server is overloaded, try again",
                      service.cfg.retry_after_s)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); it is logged on the server")


def _add_info_routes(app: FastAPI, service: RollService) -> None:
    """GET /api/health, /api/model, /api/prompts and /api/prompts/{name}.mid."""

    @app.get("/api/health")
    def health():
        if not service.healthy():
            return _error(503, "the batch engine is not running")
        return {"status": "ok", "in_flight": service.in_flight, **service.engine.stats()}

    @app.get("/api/model")
    def model():
        return service.info

    @app.get("/api/prompts")
    def prompts():
        return {"prompts": [{"name": k, "notes": len(p.notes), "midi": f"/api/prompts/{k}.mid"}
                            for k, p in service.prompts.items()]}

    @app.get("/api/prompts/{name}", response_class=Response)
    def prompt_midi(name: str):
        return Response(service.prompt_midi(name), media_type="audio/midi")


def _add_roll_routes(app: FastAPI, service: RollService) -> None:
    """POST /api/rolls, GET /api/rolls/{id} and its files."""

    @app.post("/api/rolls", openapi_extra=ROLL_FORM)
    async def post_roll(request: Request):
        with service.admit():
            fields, prompt, prompt_name = await _read_form(request)
            demo = fields.pop("demo_prompt", None)
            settings = service.settings(fields)
            if prompt is not None and demo:
                raise FieldError("send either a prompt file or demo_prompt, not both")
            meta = await _wait(service, service.submit(service.roll, settings, prompt, prompt_name, demo or None))
        return service.present(meta)

    @app.get("/api/rolls/{roll_id}")
    def get_roll(roll_id: str):
        return service.present(service.roll_meta(roll_id))

    @app.get("/api/rolls/{roll_id}/{name}")
    async def get_file(roll_id: str, name: str):
        with service.admit():  # a first GET renders (seconds of CPU): it takes a place in the queue like a roll
            path = await asyncio.get_running_loop().run_in_executor(service.pool, service.file, roll_id, name)
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=f"theremin-{roll_id[:8]}-{name}",
                            content_disposition_type="inline")


def _add_continue_route(app: FastAPI, service: RollService) -> None:
    """POST /api/continue: a raw MIDI body in, one continuation (audio/midi) out."""

    @app.post("/api/continue", response_class=Response, responses={200: {"content": {"audio/midi": {}}}},
              openapi_extra=CONTINUE_BODY)
    async def post_continue(request: Request):
        with service.admit():
            settings = service.settings(_continue_query(request))
            body = await request.body()
            if not body:
                raise FieldError("body: empty; send the prompt MIDI file as the request body")
            midi = await _wait(service, service.submit(service.continuation, settings, body))
        return Response(midi, media_type="audio/midi",
                        headers={"Content-Disposition": 'attachment; filename="continuation.mid"'})


def _continue_query(request: Request) -> dict[str, str]:
    """POST /api/continue's settings (its query parameters), each given once, n at most 1."""
    query = dict(request.query_params)
    if len(request.query_params.multi_items()) != len(query):
        raise FieldError("a query parameter is given twice")
    if query.get("n", "1").strip() not in ("", "1"):
        raise FieldError(f"n={query['n']}: /api/continue returns one continuation (use /api/rolls for more)")
    return query


async def _wait(service: RollService, fut):
    try:  # the engine drops a request at its deadline; this only guards against a stuck worker
        return await asyncio.wait_for(fut, service.cfg.timeout_s + 10)
    except asyncio.TimeoutError:
        raise RollTimeout("the roll ran past its time limit") from None


async def _read_form(request: Request) -> tuple[dict[str, str], bytes | None, str]:
    """(text fields, prompt bytes or None, prompt file name) of a multipart or urlencoded form."""
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise WrongType(f"content type {ctype.split(';')[0]!r}: send multipart/form-data (a `prompt` file field "
                        "and settings fields)")
    form = await request.form(max_files=1, max_fields=len(SETTINGS_FIELDS) + 4)
    counts = Counter(k for k, _ in form.multi_items())
    twice = [k for k, c in counts.items() if c > 1]
    if twice:
        raise FieldError(f"field {twice[0]!r} is given {counts[twice[0]]} times")
    fields, prompt, name = {}, None, "prompt.mid"
    for key, value in form.items():
        if isinstance(value, UploadFile):
            if key != "prompt":
                raise UnknownFieldError(f"file field {key!r}: the only file field is `prompt`")
            prompt, name = await value.read(), (value.filename or "prompt.mid")[:200]
            if not prompt:
                raise FieldError(f"prompt {name!r}: empty file (0 bytes)")
        elif key == "prompt":
            raise FieldError("prompt: send the MIDI file as a file field (or name a built-in one in demo_prompt)")
        else:
            fields[key] = value
    return fields, prompt, name

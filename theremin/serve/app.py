"""The HTTP contract (FastAPI) over a :class:`RollService`; the web page (theremin/web/) is served at ``/``.

    POST /api/rolls            multipart: file `prompt` (or `demo_prompt`), SamplingSettings fields, `preset`
    GET  /api/rolls/{id}       a roll again (its JSON)
    GET  /api/rolls/{id}/{f}   its files: prompt.mid, variation_NN.mid / .wav / .png
    POST /api/continue         raw MIDI body → one continuation (audio/midi); settings as query parameters
    GET  /api/model  /api/health  /api/prompts  /api/prompts/{name}.mid  /docs

Every error is JSON ``{"detail": "<message naming the field or file>"}`` with a 4xx status: 400 unknown or
malformed fields or a Host header this server does not answer to, 403 a cross-site POST (an Origin header
that is not this server's), 404 unknown roll/file, 408 a request body not received in time, 413 too large,
415 wrong content type, 422 a value, prompt or render that cannot be used, 429 queue full or this client's
share of it taken (with Retry-After), 503 a roll or render past its time limit (with Retry-After). A value
echoed in a message is cut at 200 characters. Every answer carries ``X-Content-Type-Options: nosniff``.

A request's body is read whole (within ``body_timeout_s``) before it takes a place in the queue: a slow or
stalled upload holds a connection, never a place. /api/health answers 503 while the queue is full.
The server has no authentication: bound to loopback (the default) it answers only to Host headers naming
loopback, and it refuses POSTs from other sites' pages; see :class:`HttpSettings`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

from theremin.errors import ThereminError
from theremin.music.render import RenderTimeout
from theremin.serve.engine import RollTimeout
from theremin.serve.forms import SETTINGS_FIELDS, FieldError, UnknownFieldError
from theremin.serve.service import Busy, RollService
from theremin.serve.store import MEDIA_TYPES, NoRoom, NotFound

log = logging.getLogger("theremin.serve")
WEB = Path(__file__).resolve().parent.parent / "web"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the settings fields, on top of the prompt file
MAX_ECHO = 200  # characters of a value an error message may repeat
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class HttpSettings:
    """conf/serve.yaml's settings of the HTTP front (theremin-serve passes them; the defaults suit tests).

    ``host``: the address the server is bound to (None: unknown, no Host check unless ``allowed_hosts``).
    ``allowed_hosts``: the Host names (any port) it answers to; None: derived from ``host`` (loopback: only
    localhost, 127.0.0.1 and [::1]; any other address: any name); ``["*"]``: any name.
    A POST's Origin, when it has one, must be the request's own scheme://host:port: behind a reverse proxy,
    forward the Host header and X-Forwarded-Proto (uvicorn trusts the latter from FORWARDED_ALLOW_IPS).
    ``body_timeout_s``: a request body not received whole by then is answered 408 (it never held a place).
    ``max_per_client``: queue places one client address may hold at once (429 beyond).
    """

    host: str | None = None
    allowed_hosts: list[str] | None = None
    body_timeout_s: float = 10.0
    max_per_client: int = 8


class TooLarge(ThereminError):
    pass


class WrongType(ThereminError):
    pass


class SlowBody(ThereminError):
    pass


def is_loopback(host: str) -> bool:
    """Whether a bind address (or name) reaches only this machine: localhost, 127.0.0.0/8, ::1."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_names(settings: HttpSettings) -> frozenset[str] | None:
    """The Host names (lower case, IPv6 in brackets, no port) the server answers to; None: any."""
    if settings.allowed_hosts is not None:
        names = {str(h).strip().lower() for h in settings.allowed_hosts}
        if "*" in names:
            return None
        # a bare IPv6 address gets its brackets (as in a Host header); a port given with a name is ignored
        return frozenset(f"[{n}]" if n.count(":") > 1 and not n.startswith("[") else _split_host(n)[0] for n in names)
    if settings.host is not None and is_loopback(settings.host):
        return LOOPBACK_HOSTS
    return None


def _split_host(host: str) -> tuple[str, str | None]:
    """``name[:port]`` (name may be ``[v6]``) → (lower-case name, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, colon, port = host.rpartition(":")
    return (name, port) if colon else (host, None)


def _origin(scheme: str, name: str, port: str | int | None) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(scheme)
    try:
        return scheme, name, int(port) if port not in (None, "") else default
    except ValueError:
        return scheme, name, None


class Guard:
    """ASGI middleware in front of everything: ``X-Content-Type-Options: nosniff`` on every answer, the Host
    header checked (400; DNS rebinding), a POST from another site's page refused (403: its Origin header is
    not this server's scheme, host and port; a request without Origin, from a script or curl, passes)."""

    def __init__(self, app, settings: HttpSettings):
        self.app, self.names = app, host_names(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def nosniff(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                message = {**message, "headers": [*headers, (b"x-content-type-options", b"nosniff")]}
            await send(message)

        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name, port = _split_host(host)
        if self.names is not None and name not in self.names:
            return await _error(400, f"Host header {host!r}: this server answers only to "
                                     f"{', '.join(sorted(self.names))} (a page may reach a loopback server through "
                                     "another name: DNS rebinding); set allowed_hosts to serve other names"
                                )(scope, receive, nosniff)
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS:
            origin = origin.decode("latin-1")
            o = urlsplit(origin)
            try:
                theirs = _origin(o.scheme.lower(), _bracket(o.hostname), o.port)
            except ValueError:
                theirs = None
            ours = _origin(scope.get("scheme", "http"), name, port)
            if theirs != ours:
                return await _error(403, f"Origin {origin!r}: a {scope['method']} from another site's page "
                                         f"(this server is {ours[0]}://{host}); use this server's own page, or send "
                                         "the request without an Origin header (a script, curl)"
                                    )(scope, receive, nosniff)
        return await self.app(scope, receive, nosniff)


def _bracket(name: str | None) -> str:
    name = (name or "").lower()
    return f"[{name}]" if ":" in name else name


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


def _error(code: int, detail: str, retry_after: int | None = None, **more) -> JSONResponse:
    """The JSON answer of every error: ``{"detail": <the message, values clipped>, **more}``."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": clip(detail), **more}, status_code=code, headers=headers)


_LONG = f"{{{MAX_ECHO + 1},}}"  # more than MAX_ECHO characters
_VALUE = re.compile(rf"'[^'\n]{_LONG}'|\"[^\"\n]{_LONG}\"|\S{_LONG}")  # a long quoted value, or run of non-spaces


def clip(detail: str) -> str:
    """An error message with every value in it cut to MAX_ECHO characters (an ellipsis and the value's length
    mark the cut): a quoted value, then any run of characters without a space; past 10 x MAX_ECHO in all, the
    message itself is cut. The field's name, which comes first, stays readable."""
    def cut(m: re.Match) -> str:
        return f"{m[0][:MAX_ECHO]}… ({len(m[0]):,} characters)"

    detail = _VALUE.sub(cut, detail)
    if len(detail) > 10 * MAX_ECHO:
        detail = f"{detail[:5 * MAX_ECHO]}… (the message is {len(detail):,} characters)"
    return detail


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
            "instruments": {"type": "string", "example": "bass,drums",
                            "description": "which of the prompt's parts may play (track names, families, programs; "
                                           "all: any instrument); default: the prompt's parts"},
            "add_part": {"type": "string", "example": "bass",
                         "description": "roll one new part over the prompt's bars (drums, a family or a program), "
                                        "or re-roll one of the prompt's tracks (its name)"},
            "prompt_bars": {"type": "string", "example": "9-16",
                            "description": "bars A-B of the prompt are the prompt; the roll continues after bar B"},
            "prompt_share": {"type": "number", "example": 0.75,
                             "description": "the share of the model's context the prompt may fill (0.1-0.95)"},
            "mute": {"type": "string", "example": "drums",
                     "description": "prompt parts left out before rolling (track names, families, programs)"},
        }}}}},
}


CONTINUE_BODY = {  # the OpenAPI description of POST /api/continue's body (the route reads the raw body)
    "requestBody": {"required": True, "content": {"audio/midi": {"schema": {"type": "string", "format": "binary"}}}},
}


def create_app(service: RollService, settings: HttpSettings | None = None) -> FastAPI:
    settings = settings or HttpSettings()
    # /docs from the swagger-ui-bundle package's files, not a CDN: it works offline; no /redoc (a CDN only)
    app = FastAPI(title="theremin", summary="Roll musical ideas from a MIDI prompt.",
                  description=__doc__, version="0.1.0", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=service.cfg.max_upload_bytes + FORM_OVERHEAD)
    app.add_middleware(Guard, settings=settings)  # the outermost: every answer passes through it
    app.state.service, app.state.http = service, settings
    _add_error_handlers(app, service)
    _add_info_routes(app, service, settings)
    _add_roll_routes(app, service, settings)
    _add_continue_route(app, service, settings)
    _add_docs(app)
    if WEB.is_dir():
        app.mount("/", StaticFiles(directory=WEB, html=True), name="web")
    return app


def _add_docs(app: FastAPI) -> None:
    """GET /docs: Swagger UI over /openapi.json, its scripts and styles served from here: the files the
    swagger-ui-py package ships (Swagger UI 5: it reads FastAPI's OpenAPI 3.1, which Swagger UI 4 cannot)."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs/static", StaticFiles(directory=str(files("swagger_ui") / "static")), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="theremin API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def _add_error_handlers(app: FastAPI, service: RollService) -> None:
    """Every error as JSON ``{"detail": ...}``: the user's with its 4xx status, a timeout 503, a bug 500."""

    @app.exception_handler(ThereminError)
    async def user_error(request: Request, e: ThereminError):
        if isinstance(e, Busy):
            return _error(429, str(e), e.retry_after)
        if isinstance(e, RenderTimeout) or (isinstance(e, NoRoom) and not e.never):
            return _error(503, str(e), service.cfg.retry_after_s)
        status = {UnknownFieldError: 400, NotFound: 404, SlowBody: 408, TooLarge: 413, WrongType: 415}.get(type(e), 422)
        return _error(status, str(e))

    @app.exception_handler(RollTimeout)
    async def timeout(request: Request, e: RollTimeout):
        return _error(503, f"{e} ({service.cfg.timeout_s:g} s): the server is overloaded, try again",
                      service.cfg.retry_after_s)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(e).__name__}); it is logged on the server")


def _add_info_routes(app: FastAPI, service: RollService, settings: HttpSettings) -> None:
    """GET /api/health (and /api/health/live), /api/model, /api/prompts and /api/prompts/{name}.mid."""

    @app.get("/api/health")
    def health():
        """200 when a roll would be taken now; 503 when the engine is down or the queue is full (JSON says
        which, and the queue: places in flight, capacity, places per client)."""
        queue = {"in_flight": service.in_flight, "capacity": service.cfg.queue_size,
                 "max_per_client": settings.max_per_client}
        body = {"in_flight": queue["in_flight"], "queue": queue, **service.engine.stats()}
        if not service.healthy():
            return _error(503, "the batch engine is not running", status="down", **body)
        if queue["in_flight"] >= queue["capacity"]:
            return _error(503, f"the queue is full ({queue['in_flight']} of {queue['capacity']} places taken): "
                               "new requests are answered 429 until one ends", service.cfg.retry_after_s,
                          status="busy", **body)
        return {"status": "ok", **body}

    @app.get("/api/health/live")
    def live():
        """200 while the engine runs, busy or not (for a liveness probe: a full queue is no reason to restart)."""
        if not service.healthy():
            return _error(503, "the batch engine is not running", status="down")
        return {"status": "ok"}

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


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _add_roll_routes(app: FastAPI, service: RollService, http: HttpSettings) -> None:
    """POST /api/rolls, GET /api/rolls/{id} and its files."""

    @app.post("/api/rolls", openapi_extra=ROLL_FORM)
    async def post_roll(request: Request):
        await _read_body(request, http)  # whole, before a queue place: a slow upload holds none
        fields, prompt, prompt_name = await _read_form(request, service.cfg.max_upload_bytes)
        demo = fields.pop("demo_prompt", None)
        settings = service.settings(fields)
        if prompt is not None and demo:
            raise FieldError("send either a prompt file or demo_prompt, not both")
        with service.admit(_client(request), http.max_per_client):
            meta = await _wait(service, service.submit(service.roll, settings, prompt, prompt_name, demo or None))
        return service.present(meta)

    @app.get("/api/rolls/{roll_id}")
    def get_roll(roll_id: str):
        return service.present(service.roll_meta(roll_id))

    @app.get("/api/rolls/{roll_id}/{name}")
    async def get_file(request: Request, roll_id: str, name: str):
        path = service.file(roll_id, name, make=False)  # a file made before: served at once (a stat)
        if path is None:  # a first GET renders (seconds of CPU): a queue place, and a render worker
            with service.admit(_client(request), http.max_per_client):
                deadline = time.monotonic() + float(service.render["timeout_s"])
                fut = asyncio.get_running_loop().run_in_executor(service.render_pool, service.file, roll_id, name,
                                                                 deadline)
                path = await _wait_render(service, fut)
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=f"theremin-{roll_id[:8]}-{name}",
                            content_disposition_type="inline")


def _add_continue_route(app: FastAPI, service: RollService, http: HttpSettings) -> None:
    """POST /api/continue: a raw MIDI body in, one continuation (audio/midi) out."""

    @app.post("/api/continue", response_class=Response, responses={200: {"content": {"audio/midi": {}}}},
              openapi_extra=CONTINUE_BODY)
    async def post_continue(request: Request):
        body = await _read_body(request, http)  # whole, before a queue place: a slow upload holds none
        if not body:
            raise FieldError("body: empty; send the prompt MIDI file as the request body")
        limit = service.cfg.max_upload_bytes
        if len(body) > limit:
            raise TooLarge(f"body: {len(body)} bytes, over the limit of {limit} bytes for a prompt "
                           "(max_upload_bytes)")
        query = _continue_query(request)
        name = _upload_name(query.pop("name", ""))  # what errors call the body: the user's file name
        new_only = _yes_no("new_only", query.pop("new_only", "false"))
        settings = service.settings(query)
        with service.admit(_client(request), http.max_per_client):
            midi = await _wait(service, service.submit(service.continuation, settings, body, name, new_only))
        filename = "continuation_new.mid" if new_only else "continuation.mid"
        return Response(midi, media_type="audio/midi",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _yes_no(field: str, value: str) -> bool:
    v = value.strip().lower()
    if v not in ("", "0", "1", "true", "false", "yes", "no"):
        raise FieldError(f"{field}={value[:20]!r}: use true or false")
    return v in ("1", "true", "yes")


async def _read_body(request: Request, http: HttpSettings) -> bytes:
    """The whole request body (kept on the request: its form is parsed from memory), or :class:`SlowBody`
    past ``body_timeout_s``; :class:`TooLarge` (BodyLimit) past the size limit."""
    try:
        return await asyncio.wait_for(request.body(), http.body_timeout_s)
    except asyncio.TimeoutError:
        raise SlowBody(f"request body: not received whole within {http.body_timeout_s:g} s (body_timeout_s); "
                       "send it at once") from None


def _upload_name(name: str) -> str:
    """``?name=`` of /api/continue (the prompt's file name, for messages), printable and short; else "body"."""
    name = "".join(ch for ch in name.strip() if ch.isprintable())
    return name[:100] or "body"


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


async def _wait_render(service: RollService, fut) -> Path:
    """A render's file; a render stops itself at its deadline (render.timeout_s), this only guards against a
    stuck one; one cancelled by close() (it never started) is a 503 too."""
    try:
        return await asyncio.wait_for(fut, float(service.render["timeout_s"]) + 10)
    except asyncio.TimeoutError:
        raise RenderTimeout(f"the render ran past its time limit (render.timeout_s="
                            f"{float(service.render['timeout_s']):g} s): the server is busy, try again") from None
    except asyncio.CancelledError:
        if service.healthy():  # the request itself was cancelled (the client left)
            raise
        raise RenderTimeout("the server is shutting down: try again") from None


async def _read_form(request: Request, limit: int) -> tuple[dict[str, str], bytes | None, str]:
    """(text fields, prompt bytes or None, prompt file name) of a multipart or urlencoded form; the prompt
    file itself at most ``limit`` bytes (the body may have the form's overhead on top)."""
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
            if len(prompt) > limit:
                raise TooLarge(f"prompt {name!r}: {len(prompt)} bytes, over the limit of {limit} bytes for a "
                               "prompt file (max_upload_bytes)")
        elif key == "prompt":
            raise FieldError("prompt: send the MIDI file as a file field (or name a built-in one in demo_prompt)")
        else:
            fields[key] = value
    return fields, prompt, name

"""The FastAPI application: wiring of settings, Kafka, S3, the status view and the routes."""

from __future__ import annotations

import json
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from api.guards import Idempotency, make_redis
from api.preview import router as preview_router
from api.routes import router
from api.webhooks import router as webhooks_router
from api.view import StatusView
from tapmask.events import EventProducer
from tapmask.logs import configure_logging
from tapmask.settings import Settings, get_settings
from tapmask.storage import s3_client

log = structlog.get_logger()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; Kafka and S3 clients are made at start-up, not import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        configure_logging(settings, "api")
        app.state.settings = settings
        app.state.s3 = s3_client(settings)
        app.state.s3_public = s3_client(settings, public=True)
        app.state.redis = make_redis(settings)
        app.state.idempotency = Idempotency(app.state.redis, settings)
        app.state.producer = EventProducer(settings)
        if not settings.dev_mode and settings.jwt_alg.upper() == "HS256" and settings.jwt_secret == DEV_SECRET:
            log.warning("api.insecure_jwt_secret", hint="set TAPMASK_JWT_SECRET: the default secret is public")
        app.state.view = StatusView(settings)
        app.state.view.start()
        log.info("api.started", bootstrap=settings.kafka_bootstrap)
        yield
        app.state.view.stop()
        app.state.producer.close()
        await app.state.redis.aclose()

    app = FastAPI(
        title="TapMask API",
        version="0.1.0",
        description="Upload a video, click an object, get it blurred or erased in every frame.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with a readable reason per field instead of a bare schema dump."""
        reasons = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            reasons.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(reasons), "errors": jsonable(exc.errors())})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug or an unreachable backend: 500/503 with the request id, never a stack trace."""
        rid = getattr(request.state, "request_id", None)
        log.exception("api.unhandled", error=str(exc), request_id=rid)
        return JSONResponse(status_code=500, content={"detail": "internal error", "requestId": rid}, headers={"x-request-id": rid or ""})

    app.include_router(router)
    app.include_router(webhooks_router)  # issue 6: webhook endpoints, delivery log, e-mail
    app.include_router(preview_router)  # issue 7: the mask preview on the clicked frame
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials=False, allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After", "Idempotent-Replayed"], max_age=600)
    app.add_middleware(BodyLimit, max_bytes=settings.max_json_bytes)
    app.add_middleware(RequestId)  # outermost of ours: every log line of the call carries the id
    # The web page (web/, built by scripts/build-web.sh) at "/": mounted after every API
    # route so those win; absent when the page has not been built. Keep it the last route.
    web_dist = Path(__file__).resolve().parent.parent / "web" / "dist"
    if (web_dist / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dist, html=True), name="web")
    return app


REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEV_SECRET = "tapmask-dev-secret-change-me-in-production"
UNLIMITED_BODY_PATHS = ("/api/v1/upload",)


class RequestId:
    """A request id per call (pure ASGI, cheap): the caller's ``X-Request-Id`` when it is
    harmless, else a new one; kept in ``request.state.request_id``, bound into every log
    line, sent as the events' correlation id and echoed in the answer's ``x-request-id``.

    Each call ends with one ``api.request`` log line (method, path without the query string
    — an SSE URL may carry a token —, status, duration), so every call is traceable by its id.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not REQUEST_ID.fullmatch(rid):  # never let a caller put odd bytes into log lines
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        raw = rid.encode()
        status = [500]  # what the client gets if the app dies before answering
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw)]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info("api.request", method=scope["method"], path=scope["path"], status=status[0],
                         ms=round((time.perf_counter() - started) * 1000, 1))


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) on every route but the streaming upload.

    A declared Content-Length is checked before reading; a chunked body is read up to the
    limit and replayed to the app, so a huge JSON body never reaches the parser.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or scope["path"] in UNLIMITED_BODY_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        payload = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def jsonable(errors: Any) -> Any:
    """Pydantic error lists can hold exceptions in 'ctx'; keep only JSON-safe values."""
    out = []
    for err in errors:
        out.append({k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in err.items()})
    return out

"""The FastAPI application: wiring of settings, Kafka, S3, the status view and the routes."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.routes import router
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
        app.state.producer = EventProducer(settings)
        app.state.view = StatusView(settings)
        app.state.view.start()
        log.info("api.started", bootstrap=settings.kafka_bootstrap)
        yield
        app.state.view.stop()
        app.state.producer.close()

    app = FastAPI(
        title="TapMask API",
        version="0.1.0",
        description="Upload a video, click an object, get it blurred or erased in every frame.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Any:
        """A request id per call: echoed back, bound into log lines, sent as correlation id."""
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid[:64]
        with structlog.contextvars.bound_contextvars(request_id=request.state.request_id):
            response = await call_next(request)
        response.headers["x-request-id"] = request.state.request_id
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with a readable reason per field instead of a bare schema dump."""
        reasons = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            reasons.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(reasons), "errors": jsonable(exc.errors())})

    app.include_router(router)
    return app


def jsonable(errors: Any) -> Any:
    """Pydantic error lists can hold exceptions in 'ctx'; keep only JSON-safe values."""
    out = []
    for err in errors:
        out.append({k: (v if isinstance(v, (str, int, float, list, type(None))) else str(v)) for k, v in err.items()})
    return out

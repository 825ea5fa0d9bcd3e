"""Logging set-up shared by every TapMask process (structlog over the standard library)."""

from __future__ import annotations

import logging
import sys

import structlog

from tapmask.settings import Settings


def configure_logging(settings: Settings, service: str) -> None:
    """Console or JSON log lines, each with the service name and any bound request id."""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="%(message)s")
    renderer = structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(settings.log_level.upper())),
    )
    structlog.contextvars.bind_contextvars(service=service)

"""Webhook endpoints and e-mail for notifications: register, list, delete, read the delivery log.

The endpoints live in Valkey (see ``processors/webhooks.py``), where the notifications agent
reads them. A URL is refused unless every address its host resolves to is public (no
loopback, private, link-local or cloud-metadata address; ``TAPMASK_WEBHOOK_ALLOW_LOOPBACK``
lets development use loopback). The signing secret is shown once, when the endpoint is made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

try:
    from api.auth import current_user
except ImportError:  # the JWT work (issue 5) keeps the dependency in api.routes
    from api.routes import current_user  # type: ignore[no-redef]
from processors.webhooks import EVENT_TYPES, UrlRefused, WebhookStore, check_url
from tapmask.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["webhooks"])
MAX_ENDPOINTS_PER_USER = 20


class EndpointIn(BaseModel):
    """``POST /api/v1/webhooks``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    url: str = Field(min_length=8, max_length=2048)
    secret: str | None = Field(default=None, description="whsec_ + base64 of 24-64 bytes; generated when absent")
    event_types: list[str] | None = Field(default=None, alias="eventTypes", description=f"subset of {list(EVENT_TYPES)}")


class EmailIn(BaseModel):
    """``PUT /api/v1/notifications/email``."""

    model_config = ConfigDict(extra="forbid")
    address: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _store(request: Request) -> WebhookStore:
    st = getattr(request.app.state, "webhook_store", None)
    if st is None:
        settings = getattr(request.app.state, "settings", None) or get_settings()
        st = request.app.state.webhook_store = WebhookStore(settings)
    return st


def _public(ep: dict[str, Any], with_secret: bool = False) -> dict[str, Any]:
    out = {"id": ep["id"], "url": ep["url"], "eventTypes": ep["event_types"], "createdAt": ep["created_at"],
           "disabled": ep["disabled"], "disabledReason": ep["disabled_reason"]}
    if with_secret:
        out["secret"] = ep["secret"]
    return out


def _user_id(user: Any) -> str:
    return user.id if hasattr(user, "id") else str(user)


async def _own(request: Request, endpoint_id: str, user: Any) -> dict[str, Any]:
    ep = await _store(request).endpoint(endpoint_id) if endpoint_id.startswith("ep_") and len(endpoint_id) <= 64 else None
    if ep is None or ep["user_id"] != _user_id(user):  # another user's id reads as unknown
        raise HTTPException(status_code=404, detail=f"unknown webhook endpoint {endpoint_id!r}")
    return ep


@router.post("/webhooks", status_code=201)
async def add_endpoint(body: EndpointIn, request: Request, user: Any = Depends(current_user)) -> dict[str, Any]:
    """Register an endpoint; the answer carries the signing secret (shown only here)."""
    settings = getattr(request.app.state, "settings", None) or get_settings()
    try:
        url = await asyncio.to_thread(check_url, body.url, settings.webhook_allow_loopback)
    except UrlRefused as exc:
        raise HTTPException(status_code=422, detail=f"url: {exc}") from exc
    if body.secret is not None:
        try:
            raw = base64.b64decode(body.secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(status_code=422, detail="secret: expected whsec_ followed by base64") from exc
        if not 24 <= len(raw) <= 64:
            raise HTTPException(status_code=422, detail="secret: must decode to 24-64 bytes")
    if body.event_types is not None:
        unknown = sorted(set(body.event_types) - set(EVENT_TYPES))
        if unknown or not body.event_types:
            raise HTTPException(status_code=422, detail=f"eventTypes: unknown {unknown}; expected a non-empty subset of {list(EVENT_TYPES)}")
    st = _store(request)
    if len(await st.endpoints(_user_id(user))) >= MAX_ENDPOINTS_PER_USER:
        raise HTTPException(status_code=409, detail=f"at most {MAX_ENDPOINTS_PER_USER} endpoints per user")
    ep = await st.add_endpoint(_user_id(user), url, body.secret, body.event_types)
    return _public(ep, with_secret=True)


@router.get("/webhooks")
async def list_endpoints(request: Request, user: Any = Depends(current_user)) -> dict[str, Any]:
    """The caller's endpoints (without secrets)."""
    return {"endpoints": [_public(ep) for ep in await _store(request).endpoints(_user_id(user))]}


@router.get("/webhooks/{endpoint_id}")
async def get_endpoint(endpoint_id: str, request: Request, user: Any = Depends(current_user)) -> dict[str, Any]:
    """One endpoint (without its secret)."""
    return _public(await _own(request, endpoint_id, user))


@router.delete("/webhooks/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, request: Request, user: Any = Depends(current_user)) -> Response:
    """Remove an endpoint; pending deliveries to it are dropped."""
    await _own(request, endpoint_id, user)
    await _store(request).delete_endpoint(endpoint_id)
    return Response(status_code=204)


@router.get("/webhooks/{endpoint_id}/deliveries")
async def delivery_log(endpoint_id: str, request: Request, limit: int = 100, user: Any = Depends(current_user)) -> dict[str, Any]:
    """The latest delivery attempts to an endpoint, newest first: webhook id, event type,
    attempt, HTTP status, outcome (delivered | retrying | endpoint_disabled | dead_lettered)."""
    await _own(request, endpoint_id, user)
    return {"deliveries": await _store(request).delivery_log(endpoint_id, min(max(limit, 1), 200))}


@router.put("/notifications/email", status_code=200)
async def set_email(body: EmailIn, request: Request, user: Any = Depends(current_user)) -> dict[str, Any]:
    """Send notifications to this address too (when the server has SMTP configured)."""
    await _store(request).set_email(_user_id(user), body.address)
    return {"address": body.address}


@router.get("/notifications/email")
async def get_email(request: Request, user: Any = Depends(current_user)) -> dict[str, Any]:
    """The address notifications are mailed to, if any."""
    return {"address": await _store(request).email(_user_id(user))}


@router.delete("/notifications/email", status_code=204)
async def delete_email(request: Request, user: Any = Depends(current_user)) -> Response:
    """Stop e-mail notifications."""
    await _store(request).set_email(_user_id(user), None)
    return Response(status_code=204)

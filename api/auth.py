"""Who is calling: JWT bearer tokens (PyJWT).

HS256 with a shared secret, or RS256 with a PEM public key or a JWKS file. Only the one
configured algorithm is accepted, so ``alg: none`` and the HS256-with-a-public-key trick are
refused. ``exp``, ``iat``, ``aud`` and ``iss`` are required and checked; ``sub`` is the user
id, ``tier`` (free | pro) and ``region`` come from their claims.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.guards import check_rate
from tapmask.settings import Settings

TIERS = ("free", "pro")
USER_ID_MAX = 128


@dataclass(frozen=True)
class User:
    """The caller: id, tier (free | pro) and data region."""

    id: str
    tier: str
    region: str


class AuthError(Exception):
    """The token is missing or not acceptable; the message says why."""


@lru_cache(maxsize=8)
def _read(path: str) -> str:
    return Path(path).read_text()


def _verification_key(settings: Settings, token: str) -> Any:
    alg = settings.jwt_alg.upper()
    if alg == "HS256":
        return settings.jwt_secret
    if alg != "RS256":
        raise AuthError(f"server misconfigured: unsupported jwt_alg {settings.jwt_alg}")
    if settings.jwks_file:
        jwks = json.loads(_read(str(settings.jwks_file)))
        keys = jwks.get("keys", [])
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        for k in keys:
            if kid is None or k.get("kid") == kid:
                return jwt.PyJWK(k, algorithm="RS256").key
        raise AuthError("token signed with an unknown key id")
    if settings.jwt_public_key_file:
        return _read(str(settings.jwt_public_key_file))
    raise AuthError("server misconfigured: RS256 needs jwt_public_key_file or jwks_file")


_CACHE: dict[tuple[int, str], tuple[User, float]] = {}
CACHE_MAX = 10_000
CACHE_S = 60.0


def decode_token_cached(token: str, settings: Settings) -> User:
    """``decode_token`` with a small cache of tokens already verified (per settings object):
    a hit is re-checked against its ``exp`` and trusted for at most a minute."""
    now = time.time()
    key = (id(settings), token)
    hit = _CACHE.get(key)
    if hit is not None and hit[1] > now:
        return hit[0]
    user = decode_token(token, settings)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"] + settings.jwt_leeway_s
    if len(_CACHE) >= CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (user, min(float(exp), now + CACHE_S))
    return user


def decode_token(token: str, settings: Settings) -> User:
    """Check a token and return its user, or raise AuthError with the reason."""
    key = _verification_key(settings, token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_alg.upper()],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "iat", "aud", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token is for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("token from an unknown issuer") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("token signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise AuthError("token algorithm not accepted") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    if claims["iat"] > time.time() + settings.jwt_leeway_s:
        raise AuthError("token issued in the future")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > USER_ID_MAX or not sub.isprintable():
        raise AuthError("token has no usable subject")
    tier = claims.get("tier", "free")
    if tier not in TIERS:
        raise AuthError(f"unknown tier {tier!r}")
    region = claims.get("region", "eu")
    if not isinstance(region, str) or not (1 <= len(region) <= 16):
        raise AuthError("bad region claim")
    return User(id=sub, tier=tier, region=region)


def mint_token(settings: Settings, user: str, tier: str = "pro", region: str = "eu", ttl_s: int | None = None) -> str:
    """A token for development (the CLI's ``tapmask token``, the dev sign-in route, tests)."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}")
    now = int(time.time())
    claims = {
        "sub": user, "tier": tier, "region": region, "aud": settings.jwt_audience, "iss": settings.jwt_issuer,
        "iat": now, "exp": now + int(ttl_s if ttl_s is not None else settings.jwt_ttl_s),
    }
    alg = settings.jwt_alg.upper()
    if alg == "HS256":
        return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    if not settings.jwt_private_key_file:
        raise ValueError("RS256 minting needs TAPMASK_JWT_PRIVATE_KEY_FILE")
    return jwt.encode(claims, Path(settings.jwt_private_key_file).read_text(), algorithm="RS256")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request, allow_query: bool = False) -> str:
    """The token of a request: ``Authorization: Bearer``, or ``?token=`` where allowed."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("use 'Authorization: Bearer <token>'")
        return value.strip()
    if allow_query and request.query_params.get("token"):
        return request.query_params["token"]
    raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")


def authenticate(request: Request, allow_query: bool = False) -> User:
    """The user of a request, or 401."""
    token = bearer_token(request, allow_query)
    try:
        user = decode_token_cached(token, request.app.state.settings)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc
    request.state.user_id = user.id
    return user


bearer = HTTPBearer(auto_error=False, description="JWT: HS256 or RS256, with exp, iat, aud, iss, sub, tier, region")


async def current_user(request: Request, _cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> User:
    """The caller (401 without a good token), counted against the per-user rate limit.
    Use it as the dependency of every route that needs a user."""
    user = authenticate(request)
    await check_rate(request.app.state.redis, user.id, "api", request.app.state.settings.rate_limit_per_minute)
    return user

"""Who is calling.

Walking-skeleton stand-in: every caller is the one local development user. JWT bearer
tokens (issue: the REST API) replace this dependency without touching the routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapmask.settings import get_settings


@dataclass(frozen=True)
class User:
    """The caller: id, tier (free | pro) and data region."""

    id: str
    tier: str
    region: str


def current_user() -> User:
    """The caller of this request (the dev user until JWT auth lands)."""
    s = get_settings()
    return User(id=s.dev_user_id, tier=s.dev_user_tier, region="eu")

"""Personal API tokens: created (shown once), looked up by digest, revoked.

What the admin, the settings page, ``manage.py create_token`` and the API's and WebSocket's
authentication all call.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import structlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import CharField

from eidolon_site.models import ApiToken
from reliability.sql import Param, prepared_instances

logger = structlog.get_logger(__name__)

TOKEN_PREFIX = "eid_"  # noqa: S105 (a marker, not a secret)
_PREFIX_SHOWN = len(TOKEN_PREFIX) + 6
_MAX_TOKEN_LENGTH = 200
# A token's last use is written at most this often: one write per request would cost every API
# call a database write (and a lock on SQLite).
LAST_USED_RESOLUTION = timedelta(seconds=60)


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token for ``user``: the row, and the token itself (shown once, never stored)."""
    name = name.strip()
    if not name:
        raise ValueError("a token needs a name (what is it for?)")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=raw[:_PREFIX_SHOWN], digest=token_digest(raw)
    )
    logger.info("api_token_created", user_id=user.pk, token_id=token.pk, token_name=token.name)
    return token, raw


def token_revoke(*, token: ApiToken, actor: str) -> ApiToken:
    """Stop ``token`` working from the next request (idempotent)."""
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=datetime.now(tz=UTC)
        )
        token.refresh_from_db()
        logger.info("api_token_revoked", token_id=token.pk, user_id=token.user_id, actor=actor)
    return token


def user_for_token(raw: str, *, now: datetime | None = None) -> AbstractBaseUser | None:
    """The active user whose active token ``raw`` is, or None; notes when it was last used.

    Every API request asks, so both reads are statements compiled once (``reliability.sql``).
    """
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > _MAX_TOKEN_LENGTH:
        return None
    tokens = prepared_instances(
        "active_token_by_digest",
        model=ApiToken,
        queryset=lambda: ApiToken.objects.filter(
            digest=Param("digest", CharField()), revoked_at__isnull=True
        )[:1],
        params={"digest": token_digest(raw)},
    )
    if not tokens:
        return None
    token = tokens[0]
    user_model = get_user_model()
    users = prepared_instances(
        "active_user_by_pk",
        model=user_model,
        queryset=lambda: user_model._default_manager.filter(
            pk=Param("pk", user_model._meta.pk), is_active=True
        ),
        params={"pk": token.user_id},
    )
    if not users:
        return None
    now = now or datetime.now(tz=UTC)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return users[0]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, if that is what it is."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()

"""Personal API tokens over the real database: shown once, stored hashed, revocable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User

from eidolon_site.accounts import (
    bearer_token,
    token_create,
    token_digest,
    token_revoke,
    user_for_token,
)
from eidolon_site.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="not-used-here-1")


class TestTokens:
    def test_create__the_token_is_returned_once_and_only_its_digest_is_stored(self, alice):
        token, raw = token_create(user=alice, name="ci")
        assert raw.startswith("eid_") and len(raw) > 40
        stored = ApiToken.objects.get(pk=token.pk)
        assert stored.digest == token_digest(raw) != raw
        assert raw not in {stored.name, stored.prefix, stored.digest}
        assert raw.startswith(stored.prefix) and len(stored.prefix) < 12

    def test_create__a_name_is_required(self, alice):
        with pytest.raises(ValueError, match="needs a name"):
            token_create(user=alice, name="  ")
        assert not ApiToken.objects.exists()

    def test_lookup__finds_the_user_and_notes_the_last_use_at_most_once_a_minute(self, alice):
        token, raw = token_create(user=alice, name="laptop")
        now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        assert user_for_token(raw, now=now) == alice
        assert ApiToken.objects.get(pk=token.pk).last_used_at == now
        user_for_token(raw, now=now + timedelta(seconds=30))
        assert ApiToken.objects.get(pk=token.pk).last_used_at == now  # no write per request
        later = now + timedelta(seconds=61)
        user_for_token(raw, now=later)
        assert ApiToken.objects.get(pk=token.pk).last_used_at == later

    @pytest.mark.parametrize("raw", ["", "eid_", "eid_unknown", "Bearer x", "x" * 5000])
    def test_lookup__an_unknown_or_malformed_token_finds_nobody(self, alice, raw):
        token_create(user=alice, name="laptop")
        assert user_for_token(raw) is None

    def test_revoke__the_token_stops_working_at_once(self, alice):
        token, raw = token_create(user=alice, name="old")
        token_revoke(token=token, actor="alice")
        assert token.revoked_at is not None
        assert user_for_token(raw) is None

    def test_an_inactive_user_s_token_finds_nobody(self, alice):
        _, raw = token_create(user=alice, name="laptop")
        alice.is_active = False
        alice.save()
        assert user_for_token(raw) is None

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("Bearer eid_abc", "eid_abc"),
            ("bearer  eid_abc ", "eid_abc"),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearer", None),
            ("", None),
            (None, None),
        ],
    )
    def test_bearer_token__reads_the_authorization_header(self, header, expected):
        assert bearer_token(header) == expected

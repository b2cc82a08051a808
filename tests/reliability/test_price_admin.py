"""The price table in the admin: listed with its four prices, edited by operators allowed to,
never below zero."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User

from reliability.models import ModelPrice

pytestmark = pytest.mark.django_db

FORM = {
    "model": "claude-sonnet-4-5",
    "input_per_mtok": "3",
    "output_per_mtok": "15",
    "cache_write_per_mtok": "3.75",
    "cache_read_per_mtok": "0.30",
}


def staff(client, *codenames: str) -> User:
    user = User.objects.create_user("operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def change_url(model: str) -> str:
    return f"/admin/reliability/modelprice/{ModelPrice.objects.get(model=model).pk}/change/"


class TestPriceAdmin:
    def test_list__model_and_its_four_prices(self, client):
        staff(client, "view_modelprice")
        body = client.get("/admin/reliability/modelprice/").content.decode()
        assert "claude-opus-4-1" in body and "75.0000" in body and "18.7500" in body
        for column in ("Input per mtok", "Cache read per mtok", "Updated"):
            assert column in body, column

    def test_an_operator_with_the_change_permission_edits_a_price(self, client):
        staff(client, "view_modelprice", "change_modelprice")
        response = client.post(change_url("claude-sonnet-4-5"), {**FORM, "output_per_mtok": "16"})
        assert response.status_code == 302
        assert ModelPrice.objects.get(model="claude-sonnet-4-5").output_per_mtok == Decimal(16)

    def test_a_negative_price_is_refused(self, client):
        staff(client, "view_modelprice", "change_modelprice")
        response = client.post(change_url("claude-sonnet-4-5"), {**FORM, "input_per_mtok": "-1"})
        assert response.status_code == 200
        assert "greater than or equal to 0" in response.content.decode()
        assert ModelPrice.objects.get(model="claude-sonnet-4-5").input_per_mtok == Decimal(3)

    def test_view_only__cannot_change(self, client):
        staff(client, "view_modelprice")
        response = client.post(change_url("claude-sonnet-4-5"), {**FORM, "output_per_mtok": "1"})
        assert response.status_code == 403
        assert ModelPrice.objects.get(model="claude-sonnet-4-5").output_per_mtok == Decimal(15)

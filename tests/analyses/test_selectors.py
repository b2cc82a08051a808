"""One analysis or card as a given user may see it, read with statements compiled once: the
same instance the ORM would build (converted columns, JSON, aware datetimes), or not found."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.forms.models import model_to_dict

from analyses.models import Analysis, Card
from analyses.selectors import analysis_for, card_for
from tests.api_support import analysis_with_cards

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


class TestAnalysisFor:
    def test_the_owner__the_instance_the_orm_builds(self, alice):
        analysis = analysis_with_cards(owner=alice)
        Analysis.objects.filter(pk=analysis.pk).update(summary={"modules": [{"score": 71}]})
        read = analysis_for(alice, analysis.pk)
        expected = Analysis.objects.get(pk=analysis.pk)
        assert model_to_dict(read) == model_to_dict(expected)
        assert read.created_at == expected.created_at and read.created_at.tzinfo is not None
        assert read.summary == {"modules": [{"score": 71}]}
        assert read._state.adding is False

    def test_another_user_or_nobody__not_found__staff__found(self, alice):
        analysis = analysis_with_cards(owner=alice)
        bob = User.objects.create_user("bob")
        staff = User.objects.create_user("sam", is_staff=True)
        for stranger in (bob, AnonymousUser()):
            with pytest.raises(Analysis.DoesNotExist):
                analysis_for(stranger, analysis.pk)
        assert analysis_for(staff, analysis.pk).pk == analysis.pk
        with pytest.raises(Analysis.DoesNotExist):
            analysis_for(staff, analysis.pk + 1000)


class TestCardFor:
    def test_the_owner_s_card__found__another_user_s__not(self, alice):
        card = analysis_with_cards(owner=alice).cards.first()
        bob = User.objects.create_user("bob")
        expected = model_to_dict(Card.objects.get(pk=card.pk))
        assert model_to_dict(card_for(alice, card.pk)) == expected
        with pytest.raises(Card.DoesNotExist):
            card_for(bob, card.pk)

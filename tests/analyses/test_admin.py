"""Operators start, follow and stop analyses in the admin, through the same services."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django_tasks_db.models import DBTaskResult

from analyses.models import Analysis, AnalysisStatus

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/analyses/analysis/add/"


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("ops", password="not-used-here-1")
    client.force_login(user)
    return user


@pytest.fixture
def source_root(tmp_path, settings):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "app.py").write_text("def f():\n    return 1\n")
    settings.EIDOLON_SOURCE_ROOTS = [str(tmp_path)]
    return tmp_path


class TestStartAnAnalysis:
    def test_the_add_form_asks_only_what_an_analysis_needs(self, client, operator):
        page = client.get(ADD_URL).content.decode()
        for field in ('name="source"', 'name="ref"', 'name="provider"'):
            assert field in page
        assert 'name="functions_total"' not in page

    def test_adding_creates_a_queued_analysis_for_the_workers(self, client, operator, source_root):
        response = client.post(
            ADD_URL, {"source": str(source_root / "project"), "ref": "", "provider": "static"}
        )
        assert response.status_code == 302
        analysis = Analysis.objects.get()
        assert (analysis.status, analysis.provider, analysis.created_by) == (
            AnalysisStatus.QUEUED,
            "static",
            operator,
        )
        assert DBTaskResult.objects.filter(args_kwargs__args=[analysis.pk]).count() == 1

    @pytest.mark.parametrize(
        ("data", "field", "message"),
        [
            ({"source": "/etc", "provider": "static"}, "source", "outside"),
            ({"source": "file:///etc", "provider": "static"}, "source", "not allowed"),
            ({"source": "https://example.com/r.git", "ref": "a..b"}, "ref", "not a valid"),
            ({"source": "https://example.com/r.git", "provider": "anthropic"}, "provider", "KEY"),
        ],
    )
    def test_bad_input_is_shown_next_to_its_field_and_nothing_is_created(
        self, client, operator, source_root, settings, data, field, message
    ):
        settings.ANTHROPIC_API_KEY = ""
        response = client.post(ADD_URL, {"ref": "", "provider": "static", **data})
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert message in " ".join(errors[field])
        assert not Analysis.objects.exists()

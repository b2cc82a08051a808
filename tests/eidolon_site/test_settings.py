"""Settings come from the environment; bad values fail loudly, production settings pass --deploy."""

from __future__ import annotations

import secrets
import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from eidolon_site.settings import env_bool, env_float, env_int, env_list
from tests.processes import run_manage, subprocess_environment


@pytest.fixture
def manage(tmp_path):
    """Run manage.py in a child process with extra environment, on a scratch SQLite file."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        scratch = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return run_manage(*args, env=subprocess_environment(**{"DATABASE_URL": scratch, **env}))

    return run


class TestEnvironmentHelpers:
    def test_env_bool__accepts_the_usual_spellings(self, monkeypatch):
        for raw, expected in [
            ("1", True),
            ("TRUE", True),
            ("on", True),
            ("0", False),
            ("no", False),
        ]:
            monkeypatch.setenv("EIDOLON_X", raw)
            assert env_bool("EIDOLON_X") is expected

    def test_env_bool__unset_or_blank_gives_the_default(self, monkeypatch):
        monkeypatch.delenv("EIDOLON_X", raising=False)
        assert env_bool("EIDOLON_X", True) is True
        monkeypatch.setenv("EIDOLON_X", "  ")
        assert env_bool("EIDOLON_X", False) is False

    @pytest.mark.parametrize(
        ("helper", "raw", "message"),
        [
            (env_bool, "maybe", "must be a boolean"),
            (env_int, "ten", "must be an integer"),
            (env_float, "fast", "must be a number"),
        ],
    )
    def test_bad_value__names_the_variable(self, monkeypatch, helper, raw, message):
        monkeypatch.setenv("EIDOLON_X", raw)
        with pytest.raises(ImproperlyConfigured, match=f"EIDOLON_X {message}"):
            helper("EIDOLON_X", 1) if helper is not env_bool else helper("EIDOLON_X")

    def test_env_int__below_minimum_is_refused(self, monkeypatch):
        monkeypatch.setenv("EIDOLON_X", "-3")
        with pytest.raises(ImproperlyConfigured, match="must be >= 0"):
            env_int("EIDOLON_X", 1, minimum=0)

    def test_env_list__splits_and_trims(self, monkeypatch):
        monkeypatch.setenv("EIDOLON_X", " a.example , b.example,, ")
        assert env_list("EIDOLON_X", []) == ["a.example", "b.example"]


class TestProcessSettings:
    def test_missing_secret_key_without_debug__refuses_to_start(self, manage):
        result = manage("check", EIDOLON_SECRET_KEY="", EIDOLON_DEBUG="false")
        assert result.returncode != 0
        assert "EIDOLON_SECRET_KEY must be set when EIDOLON_DEBUG is off" in result.stderr

    def test_unknown_database_scheme__is_a_clear_error(self, manage):
        assert manage("check").returncode == 0
        result = manage("check", DATABASE_URL="mysql://root@localhost/x")
        assert result.returncode != 0
        assert "DATABASE_URL must be postgres://" in result.stderr

    def test_bad_log_format__is_a_clear_error(self, manage):
        result = manage("check", EIDOLON_LOG_FORMAT="xml")
        assert result.returncode != 0
        assert "EIDOLON_LOG_FORMAT must be 'console' or 'json'" in result.stderr

    def test_check_deploy__reports_nothing_with_production_variables(self, manage):
        result = manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            EIDOLON_SECRET_KEY=secrets.token_urlsafe(50),
            EIDOLON_DEBUG="false",
            EIDOLON_HTTPS="true",
            EIDOLON_ALLOWED_HOSTS="eidolon.example.com",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout

    def test_check_deploy__flags_plain_http_production(self, manage):
        result = manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            EIDOLON_SECRET_KEY=secrets.token_urlsafe(50),
            EIDOLON_HTTPS="false",
        )
        assert result.returncode != 0
        assert "security.W008" in result.stderr + result.stdout

    def test_migrations_match_the_models(self, manage):
        result = manage("makemigrations", "--check", "--dry-run")
        assert result.returncode == 0, result.stdout + result.stderr

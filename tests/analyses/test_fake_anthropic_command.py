"""``manage.py fake_anthropic``: the fake Anthropic API in a process of its own."""

from __future__ import annotations

import os

import anthropic
import pytest
from django.core.management import CommandError, call_command

from tests.processes import start_fake_anthropic_command
from tests.reliability.fake_anthropic.support import API_KEY, http


class TestFakeAnthropicCommand:
    def test_command__serves_until_sigterm(self):
        process, base_url = start_fake_anthropic_command(
            "--rate=overloaded=1.0", env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            sdk_client = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0)
            with sdk_client, pytest.raises(anthropic.OverloadedError):
                sdk_client.messages.create(
                    model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
                )
            _, _, log = http("GET", f"{base_url}/_fake/log")
        finally:
            exit_code = process.stop()

        assert [entry["fault"] for entry in log] == ["overloaded"]
        assert exit_code == 0

    def test_command__model_faults_overload_only_that_model(self):
        process, base_url = start_fake_anthropic_command(
            "--model-faults=claude-sonnet-5-5=overloaded:1.0",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            sdk_client = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0)
            with sdk_client:
                with pytest.raises(anthropic.OverloadedError):
                    sdk_client.messages.create(
                        model="claude-sonnet-5-5",
                        max_tokens=5,
                        messages=[{"role": "user", "content": "hi"}],
                    )
                message = sdk_client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=5,
                    messages=[{"role": "user", "content": "hi"}],
                )
            _, _, stats = http("GET", f"{base_url}/_fake/stats")
        finally:
            process.stop()

        assert message.model == "claude-haiku-4-5"
        assert stats["by_model"] == {
            "claude-sonnet-5-5": {"overloaded": 1},
            "claude-haiku-4-5": {"ok": 1},
        }

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--rate", "explode=0.1"], "unknown fault kind 'explode'"),
            (["--rate", "overloaded"], "KIND=PROBABILITY"),
            (["--rate", "overloaded=lots"], "not a number"),
            (["--rate", "overloaded=0.8", "--rate", "hang=0.5"], "sum to at most 1"),
            (["--latency", "0.3:0.1"], "latency_s maximum"),
            (["--latency", "soon"], "SECONDS or MIN:MAX"),
            (["--rpm", "0"], "rpm_limit"),
            (["--model-faults", "overloaded:1.0"], "MODEL=KIND:PROBABILITY"),
            (["--model-faults", "m=explode:0.1"], "unknown fault kind 'explode'"),
            (["--model-faults", "m=overloaded"], "expected KIND:PROBABILITY"),
            (["--model-faults", "m=overloaded:2"], "must be <= 1"),
            (["--model-faults", "m=overloaded:0.6,hang:0.6"], "sum to at most 1"),
        ],
    )
    def test_command__bad_arguments_raise_command_error(self, arguments, message):
        with pytest.raises(CommandError, match=message):
            call_command("fake_anthropic", *arguments)

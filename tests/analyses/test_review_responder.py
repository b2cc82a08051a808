"""The fake API's review responder: plausible, valid, reproducible findings for review prompts."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import anthropic
import pytest
from django.core.management import CommandError, call_command

from analyses.findings import InvalidReply, parse_findings_reply, read_findings_reply
from analyses.parsing import parse_module
from analyses.providers.prompt import review_prompt
from analyses.review_responder import make_review_responder, review_responder
from tests.anthropic_support import MODEL
from tests.processes import start_fake_anthropic_command


def review_body(*, name: str = "pkg.mod.f", start: int = 10, end: int = 20) -> dict[str, Any]:
    header = f"Function: {name} (pkg/mod.py, lines {start}-{end})"
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "system": "You are an expert Python reviewer.",
        "messages": [{"role": "user", "content": f"{header}\n\n<function>\n...\n</function>"}],
    }


def cases(count: int) -> list[tuple[dict[str, Any], int, int]]:
    """(request body, first line, last line) of ``count`` different review prompts."""
    ranges = [(index + 1, index + 1 + index % 30) for index in range(count)]
    return [
        (review_body(name=f"pkg.mod.f{index}", start=start, end=end), start, end)
        for index, (start, end) in enumerate(ranges)
    ]


def is_valid(reply: Any, *, start: int, end: int) -> bool:
    try:
        parse_findings_reply(reply, unit_start=start, unit_end=end)
    except InvalidReply:
        return False
    return True


class TestReviewResponder:
    def test_replies__are_valid_findings_inside_the_function(self):
        for body, start, end in cases(200):
            reply = review_responder(body)

            # Exactly inside: parse_findings_reply would also clamp lines just outside.
            parse_findings_reply(json.dumps(reply), unit_start=start, unit_end=end)
            assert all(
                start <= finding["line_start"] <= finding["line_end"] <= end
                for finding in reply["findings"]
            )

    def test_replies__are_deterministic_per_prompt(self):
        body = review_body()

        assert review_responder(body) == review_responder(json.loads(json.dumps(body)))

    def test_replies__vary_in_count_kind_and_severity(self):
        replies = [review_responder(body) for body, _, _ in cases(200)]

        counts = Counter(len(reply["findings"]) for reply in replies)
        kinds = {finding["kind"] for reply in replies for finding in reply["findings"]}
        severities = {finding["severity"] for reply in replies for finding in reply["findings"]}
        assert set(counts) == {0, 1, 2}
        assert len(kinds) >= 5 and severities == {"high", "medium", "low"}

    def test_prompt_of_the_provider__is_understood(self):
        source = "def add(a, b):\n    return a + b\n"
        (_, unit), _ = parse_module("\n" * 4 + source, path="calc.py")
        body = review_body()
        body["messages"] = [{"role": "user", "content": review_prompt(unit)}]

        reply = review_responder(body)

        parse_findings_reply(reply, unit_start=5, unit_end=6)

    def test_correction_request__answers_for_the_first_header(self):
        body = review_body(start=40, end=44)
        body["messages"] += [
            {"role": "assistant", "content": "not json"},
            {"role": "user", "content": "Your reply could not be used: not_json"},
        ]

        assert all(
            40 <= finding["line_start"] <= finding["line_end"] <= 44
            for finding in review_responder(body)["findings"]
        )

    def test_request_without_a_header__gets_none(self):
        body = review_body()
        body["messages"] = [{"role": "user", "content": "Hello"}]

        assert review_responder(body) is None


class TestMakeReviewResponder:
    def test_defaults__answer_like_review_responder(self):
        responder = make_review_responder()

        assert all(responder(body) == review_responder(body) for body, _, _ in cases(50))

    def test_invalid_rate_1__every_reply_is_rejected(self):
        responder = make_review_responder(invalid_rate=1.0)

        assert not any(
            is_valid(responder(body), start=start, end=end) for body, start, end in cases(40)
        )

    def test_invalid_rate__rejects_about_that_share_of_prompts(self):
        responder = make_review_responder(invalid_rate=0.3, seed=7)

        invalid = sum(
            not is_valid(responder(body), start=start, end=end) for body, start, end in cases(400)
        )

        assert 80 <= invalid <= 160

    def test_untidy_rate_1__every_reply_valid_but_kept_only_after_adjustments(self):
        responder = make_review_responder(untidy_rate=1.0)

        for body, start, end in cases(60):
            read = read_findings_reply(responder(body), unit_start=start, unit_end=end)
            assert (len(read.findings), read.clamped, read.merged) == (2, 3, 1)
            assert all(finding.adjustment for finding in read.findings)

    def test_untidy_rate_out_of_range__raises(self):
        with pytest.raises(ValueError, match="untidy_rate"):
            make_review_responder(untidy_rate=2)

    def test_seed__changes_the_replies(self):
        first, second = make_review_responder(seed=1), make_review_responder(seed=2)

        bodies = [body for body, _, _ in cases(20)]

        assert [first(body) for body in bodies] != [second(body) for body in bodies]

    @pytest.mark.parametrize("rate", [-0.1, 1.5])
    def test_invalid_rate_out_of_range__raises(self, rate):
        with pytest.raises(ValueError, match="invalid_rate"):
            make_review_responder(invalid_rate=rate)


class TestFakeAnthropicCommandResponder:
    def test_responder_review__answers_review_prompts(self):
        process, base_url = start_fake_anthropic_command(
            "--responder=review", env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            client = anthropic.Anthropic(api_key="test-key", base_url=base_url, max_retries=0)
            with client:
                message = client.messages.create(**review_body(start=3, end=9))
        finally:
            process.stop()

        parse_findings_reply(message.content[0].text, unit_start=3, unit_end=9)

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["--responder", "poetry"], "invalid choice"),
            (["--invalid-rate", "0.2"], "needs --responder review"),
            (["--responder", "review", "--invalid-rate", "2"], "invalid_rate"),
        ],
    )
    def test_bad_responder_arguments__raise_command_error(self, arguments, message):
        with pytest.raises(CommandError, match=message):
            call_command("fake_anthropic", *arguments)

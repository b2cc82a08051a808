"""The fake's config: its checks, wherever a config comes from, and the command's text forms."""

from __future__ import annotations

import json

import pytest

from reliability.fake_anthropic import FakeAnthropic, FakeConfig, parse_latency, parse_rates
from tests.reliability.fake_anthropic.support import fast_config, http


class TestFakeConfig:
    def test_config_endpoint__rejects_bad_values_and_keeps_config(self):
        with FakeAnthropic(config=fast_config()).running() as fake:
            status, _, body = http(
                "POST", f"{fake.base_url}/_fake/config", {"fault_rates": {"explode": 0.5}}
            )
            unknown_status, _, unknown_body = http(
                "POST", f"{fake.base_url}/_fake/config", {"colour": "red"}
            )

            assert status == 400
            assert "unknown fault kind 'explode'" in body["error"]["message"]
            assert unknown_status == 400
            assert "colour" in unknown_body["error"]["message"]
            assert fake.config.fault_rates == {}

    def test_configure__rejects_rates_summing_above_one(self):
        fake = FakeAnthropic()

        with pytest.raises(ValueError, match="sum to at most 1"):
            fake.configure(fault_rates={"overloaded": 0.6, "hang": 0.5})

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"rpm_window_s": 0}, "rpm_window_s must be > 0"),
            ({"trickle_chunk_bytes": 1.5}, "trickle_chunk_bytes must be an integer"),
            ({"latency_s": (0.1, 0.2, 0.3)}, "latency_s range must be"),
            ({"fault_rates": {"overloaded": 1.5}}, "must be <= 1"),
            ({"require_api_key": "yes"}, "require_api_key must be true or false"),
            ({"seed": True}, "seed must be an integer"),
        ],
    )
    def test_config__rejects_bad_values(self, changes, message):
        with pytest.raises(ValueError, match=message):
            FakeConfig(**changes)

    def test_to_dict__round_trips_through_json(self):
        config = FakeConfig(fault_rates={"overloaded": 0.25}, latency_s=[0.1, 0.2], seed=3)

        data = json.loads(json.dumps(config.to_dict()))

        assert FakeConfig(**data) == config


class TestConfigTextForms:
    def test_parse_rates__reads_kind_probability_pairs(self):
        assert parse_rates(["overloaded=0.2", " hang =0.1"]) == {"overloaded": 0.2, "hang": 0.1}

    @pytest.mark.parametrize(
        ("text", "latency"), [(None, 0.0), ("0.2", 0.2), ("0.1:0.3", (0.1, 0.3))]
    )
    def test_parse_latency__reads_seconds_or_a_range(self, text, latency):
        assert parse_latency(text) == latency

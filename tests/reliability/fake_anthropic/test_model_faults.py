"""Model-specific faults: rates that replace ``fault_rates`` for requests naming one model, and
the requests counted per model per outcome."""

from __future__ import annotations

import json

import anthropic
import pytest

from reliability.fake_anthropic import (
    FakeAnthropic,
    FakeConfig,
    counts_by_model,
    parse_model_faults,
)
from tests.reliability.fake_anthropic.support import ask, fast_config, http

PRIMARY = "claude-sonnet-5-5"
FALLBACK = "claude-haiku-4-5"


class TestModelFaultRates:
    async def test_model_fault_rates__overload_only_the_named_model(self, fake, client):
        fake.configure(model_fault_rates={PRIMARY: {"overloaded": 1.0}})

        for _ in range(3):
            with pytest.raises(anthropic.OverloadedError):
                await ask(client, model=PRIMARY)
            message = await ask(client, model=FALLBACK)
            assert message.model == FALLBACK

        assert [(record.model, record.status) for record in fake.requests] == [
            (PRIMARY, 529),
            (FALLBACK, 200),
        ] * 3

    async def test_model_fault_rates__replace_the_general_rates_for_that_model(self, fake, client):
        fake.configure(fault_rates={"server_error": 1.0}, model_fault_rates={FALLBACK: {}})

        with pytest.raises(anthropic.InternalServerError):
            await ask(client, model=PRIMARY)
        await ask(client, model=FALLBACK)

        assert [record.fault for record in fake.requests] == ["server_error", "ok"]

    async def test_model_fault_rates__cleared_by_configure(self, fake, client):
        fake.configure(model_fault_rates={PRIMARY: {"overloaded": 1.0}})
        with pytest.raises(anthropic.OverloadedError):
            await ask(client, model=PRIMARY)

        fake.configure(model_fault_rates={})
        message = await ask(client, model=PRIMARY)

        assert message.model == PRIMARY
        assert fake.config.model_fault_rates == {}

    async def test_script__still_takes_precedence_over_model_rates(self, fake, client):
        fake.configure(model_fault_rates={PRIMARY: {"overloaded": 1.0}})
        fake.script("ok")

        message = await ask(client, model=PRIMARY)

        assert message.type == "message"

    def test_rates_for__falls_back_to_the_general_rates(self):
        config = FakeConfig(
            fault_rates={"hang": 0.1}, model_fault_rates={PRIMARY: {"overloaded": 0.5}}
        )

        assert config.rates_for(PRIMARY) == {"overloaded": 0.5}
        assert config.rates_for(FALLBACK) == {"hang": 0.1}
        assert config.rates_for(None) == {"hang": 0.1}

    @pytest.mark.parametrize(
        ("model_fault_rates", "message"),
        [
            (
                {PRIMARY: {"explode": 0.5}},
                "model_fault_rates\\['claude-sonnet-5-5'\\]: unknown "
                "fault kind 'explode'; expected one of: ok, overloaded",
            ),
            (
                {PRIMARY: {"overloaded": 1.5}},
                "model_fault_rates\\['claude-sonnet-5-5'\\]\\['overloaded'\\] must be <= 1",
            ),
            ({PRIMARY: {"overloaded": -0.1}}, "must be >= 0"),
            ({PRIMARY: {"overloaded": "lots"}}, "must be a number"),
            ({PRIMARY: {"overloaded": 0.6, "hang": 0.5}}, "sum to at most 1"),
            ({PRIMARY: ["overloaded"]}, "must be a mapping of fault kind to probability"),
            ({"": {"overloaded": 1.0}}, "a model name must be non-empty"),
            ({3: {"overloaded": 1.0}}, "a model name must be non-empty"),
            ([PRIMARY], "model_fault_rates must be a mapping of model name"),
        ],
    )
    def test_config__rejects_bad_model_fault_rates(self, model_fault_rates, message):
        with pytest.raises(ValueError, match=message):
            FakeConfig(model_fault_rates=model_fault_rates)

    def test_to_dict__round_trips_model_fault_rates_through_json(self):
        config = FakeConfig(model_fault_rates={PRIMARY: {"overloaded": 1.0}, FALLBACK: {}})

        data = json.loads(json.dumps(config.to_dict()))

        assert FakeConfig(**data) == config


class TestModelFaultsOverHttp:
    def test_config_endpoint__sets_model_fault_rates(self):
        with FakeAnthropic(config=fast_config()).running() as fake:
            status, _, body = http(
                "POST",
                f"{fake.base_url}/_fake/config",
                {"model_fault_rates": {PRIMARY: {"overloaded": 1.0}}},
            )

            assert status == 200
            assert body["model_fault_rates"] == {PRIMARY: {"overloaded": 1.0}}
            assert fake.config.rates_for(PRIMARY) == {"overloaded": 1.0}

    @pytest.mark.parametrize(
        ("model_fault_rates", "message"),
        [
            ({PRIMARY: {"explode": 1.0}}, "unknown fault kind 'explode'"),
            ({PRIMARY: 1.0}, "must be a mapping of fault kind"),
            ("sonnet", "model_fault_rates must be a mapping"),
        ],
    )
    def test_config_endpoint__rejects_bad_model_fault_rates_and_keeps_config(
        self, model_fault_rates, message
    ):
        config = fast_config(model_fault_rates={FALLBACK: {"hang": 0.5}})
        with FakeAnthropic(config=config).running() as fake:
            status, _, body = http(
                "POST", f"{fake.base_url}/_fake/config", {"model_fault_rates": model_fault_rates}
            )

            assert status == 400
            assert message in body["error"]["message"]
            assert fake.config == config

    def test_stats_endpoint__counts_requests_per_model_per_outcome(self):
        request = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        config = fast_config(model_fault_rates={PRIMARY: {"overloaded": 1.0}})
        with FakeAnthropic(config=config).running() as fake:
            messages_url = f"{fake.base_url}/v1/messages"
            key = {"x-api-key": "k"}
            for model in (PRIMARY, PRIMARY, FALLBACK):
                http("POST", messages_url, {"model": model, **request}, headers=key)
            http("POST", messages_url, request, headers=key)  # no model: 400 invalid_request
            status, _, stats = http("GET", f"{fake.base_url}/_fake/stats")

        assert status == 200
        assert stats == {
            "requests": 4,
            "by_model": {
                PRIMARY: {"overloaded": 2},
                FALLBACK: {"ok": 1},
                "(none)": {"invalid_request": 1},
            },
        }
        assert fake.stats() == stats["by_model"]
        assert counts_by_model(fake.requests[:1]) == {PRIMARY: {"overloaded": 1}}


class TestParseModelFaults:
    def test_parse_model_faults__reads_model_kind_probability_lists(self):
        assert parse_model_faults(
            [f"{PRIMARY}=overloaded:0.8, rate_limit:0.2", f" {FALLBACK} ="]
        ) == {PRIMARY: {"overloaded": 0.8, "rate_limit": 0.2}, FALLBACK: {}}

    @pytest.mark.parametrize(
        ("specs", "message"),
        [
            (["overloaded:1.0"], "MODEL=KIND:PROBABILITY"),
            (["=overloaded:1.0"], "MODEL=KIND:PROBABILITY"),
            ([f"{PRIMARY}=overloaded"], "expected KIND:PROBABILITY, got 'overloaded'"),
            ([f"{PRIMARY}=overloaded:lots"], "'lots' is not a number"),
            ([f"{PRIMARY}=overloaded:1", f"{PRIMARY}=hang:1"], "names 'claude-sonnet-5-5' twice"),
        ],
    )
    def test_parse_model_faults__rejects_bad_text(self, specs, message):
        with pytest.raises(ValueError, match=message):
            parse_model_faults(specs)

"""The fake on the test's event loop, and an SDK client of it that never retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest

from reliability.fake_anthropic import FakeAnthropic
from tests.reliability.fake_anthropic.support import API_KEY, fast_config


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(config=fast_config()) as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake.base_url, max_retries=0, timeout=5.0
    ) as sdk_client:
        yield sdk_client

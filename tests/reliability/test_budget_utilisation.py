"""The budget at its real limit, end to end: an analysis against a fake that enforces the API's
limits as token buckets, with time compressed tenfold (6 s windows holding a minute's limits,
0.1 s replies), the mechanism ``benchmarks/budget_utilisation.py`` measures over minutes."""

from __future__ import annotations

import pytest

from benchmarks.budget_utilisation import LIMITS, OUTPUT_TOKENS_PER_REPLY, measure
from reliability.output_estimate import forget_estimates
from reliability.ratelimit_wait import forget_started_requests


@pytest.mark.django_db(transaction=True)
def test_output_bound_analysis__near_the_bound__no_window_over__few_429s():
    forget_estimates()  # the first replies reserve the fixed estimate, as after a restart
    forget_started_requests()
    windows = 3

    figures = measure(minutes=windows, window_s=6.0, latency_s=0.1)

    bound = windows * LIMITS["output_tokens"] / OUTPUT_TOKENS_PER_REPLY  # 80 replies
    assert figures["answered"] >= 0.85 * bound
    assert figures["busiest_output_window"] <= LIMITS["output_tokens"]
    assert figures["all_429"] < 0.02 * figures["all_requests"]
    assert figures["status"] == "completed"

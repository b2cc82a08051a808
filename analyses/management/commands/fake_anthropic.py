"""Run the fault-injecting fake Anthropic API in the foreground until SIGINT or SIGTERM.

The fake itself (``reliability.fake_anthropic``) knows nothing of analyses; this command lives here
because it can plug in the analyses' review responder.

python manage.py fake_anthropic --port 8765 --rate overloaded=0.2 --latency 0.1:0.3
python manage.py fake_anthropic --responder review --invalid-rate 0.1
python manage.py fake_anthropic --model-faults claude-sonnet-5-5=overloaded:1.0
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analyses.review_responder import make_review_responder
from reliability.fake_anthropic import (
    FakeAnthropic,
    FakeConfig,
    Fault,
    Responder,
    parse_latency,
    parse_model_faults,
    parse_rates,
)


class Command(BaseCommand):
    help = "Serve a fault-injecting fake of the Anthropic Messages API for drills and benchmarks."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = FakeConfig()
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port.")
        parser.add_argument(
            "--rate",
            action="append",
            default=[],
            metavar="KIND=PROBABILITY",
            help=f"Repeatable. Fault kinds: {', '.join(kind.value for kind in Fault)}.",
        )
        parser.add_argument(
            "--model-faults",
            action="append",
            default=[],
            metavar="MODEL=KIND:PROBABILITY[,KIND:PROBABILITY...]",
            help="Repeatable. Fault rates that replace --rate for requests naming MODEL.",
        )
        parser.add_argument(
            "--latency", metavar="SECONDS|MIN:MAX", help="Delay of successful replies."
        )
        parser.add_argument("--rpm", type=int, help="The fake's own requests-per-window limit.")
        parser.add_argument(
            "--rpm-window", type=float, default=defaults.rpm_window_s, metavar="SECONDS"
        )
        parser.add_argument(
            "--retry-after", type=float, default=defaults.retry_after_s, metavar="SECONDS"
        )
        parser.add_argument("--hang-seconds", type=float, default=defaults.hang_seconds)
        parser.add_argument(
            "--trickle-delay", type=float, default=defaults.trickle_delay_s, metavar="SECONDS"
        )
        parser.add_argument("--seed", type=int)
        parser.add_argument(
            "--responder",
            choices=["review"],
            help="review: plausible findings for the anthropic provider's review prompts.",
        )
        parser.add_argument(
            "--invalid-rate",
            type=float,
            default=0.0,
            metavar="PROBABILITY",
            help="With --responder review: the share of replies the provider must reject.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = FakeConfig(
                fault_rates=parse_rates(options["rate"]),
                model_fault_rates=parse_model_faults(options["model_faults"]),
                latency_s=parse_latency(options["latency"]),
                rpm_limit=options["rpm"],
                rpm_window_s=options["rpm_window"],
                retry_after_s=options["retry_after"],
                hang_seconds=options["hang_seconds"],
                trickle_delay_s=options["trickle_delay"],
                seed=options["seed"],
            )
            responder = _responder(
                options["responder"], invalid_rate=options["invalid_rate"], seed=options["seed"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        fake = FakeAnthropic(
            host=options["host"], port=options["port"], config=config, responder=responder
        )
        asyncio.run(self._serve(fake))

    async def _serve(self, fake: FakeAnthropic) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stopping.set)
        try:
            await fake.start()
        except OSError as exc:
            raise CommandError(f"Cannot start the fake Anthropic API: {exc}") from exc
        self.stdout.write(f"Fake Anthropic API listening on {fake.base_url}")
        self.stdout.flush()
        try:
            await stopping.wait()
        finally:
            await fake.stop()
        self.stdout.write("Fake Anthropic API stopped.")


def _responder(name: str | None, *, invalid_rate: float, seed: int | None) -> Responder | None:
    if name is None:
        if invalid_rate:
            raise ValueError("--invalid-rate needs --responder review")
        return None
    return make_review_responder(invalid_rate=invalid_rate, seed=seed or 0)

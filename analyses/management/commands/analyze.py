"""Run one analysis from the terminal, in this process (no worker needed).

    python manage.py analyze SOURCE [--ref REF] [--provider anthropic|static]
                                    [--concurrency N] [--json] [--allow-private-hosts]
                                    [--format json|sarif|markdown [--output FILE]]
                                    [--fail-on high|medium|low]
                                    [--diff BASE] [--upgrade-fallback-reviews]

Exit status: 0 when it completes (failed units are reported, not fatal), 1 when it fails,
times out or is cancelled (Ctrl+C), 2 for bad input (with a one-line reason on stderr), 3 when
it completes with a finding at or above --fail-on's severity that is not dismissed.
With --json, stdout holds exactly one JSON object; logs and progress go to stderr.
--format writes the export of a completed analysis to --output FILE, or to stdout when FILE is
"-" or absent (the summary then goes to stderr; --json then needs a FILE). Nothing is written
when the analysis fails: an empty report would tell a code-scanning platform all was fixed.
--allow-private-hosts lets a git URL lead to a private or loopback address (a git server on
this machine or the internal network), which the web and the API refuse.
--diff BASE reviews only the functions changed since BASE (a change review; a git URL, or a
directory that is a git work tree, its uncommitted changes included).
--upgrade-fallback-reviews reviews again, with the primary model, the functions whose cached
review a fallback model wrote (EIDOLON_AI_MODELS); by default those reviews are used as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)

from analyses.exports import EXPORT_FORMATS, export_analysis, findings_at_or_above
from analyses.exports.delivery import ExportPlan, export_plan, write_export
from analyses.findings import SEVERITIES
from analyses.git import private_addresses_allowed
from analyses.models import Analysis, AnalysisStatus
from analyses.orchestrator import run_analysis
from analyses.selectors import analysis_cost
from analyses.services import PROVIDERS, InvalidAnalysisRequest, analysis_cancel, analysis_create

SUCCESS_STATUSES = (AnalysisStatus.COMPLETED, AnalysisStatus.COMPLETED_WITH_ERRORS)
EXIT_GATE = 3  # --fail-on: a finding at or above the severity
BAR_WIDTH = 30


def result_summary(analysis: Analysis, *, duration: float) -> dict[str, Any]:
    return {
        "id": analysis.pk,
        "status": analysis.status,
        "functions_total": analysis.functions_total,
        "functions_analyzed": analysis.functions_analyzed,
        "functions_cached": analysis.functions_cached,
        "functions_failed": analysis.functions_failed,
        "cards": analysis.cards_count,
        "llm_requests": analysis.llm_requests,
        "input_tokens": analysis.input_tokens,
        "output_tokens": analysis.output_tokens,
        "cost_usd": _dollars(analysis_cost(analysis)),
        "diff_base": analysis.diff_base,
        "functions_selected": analysis.functions_selected,
        "diff_files": analysis.diff_files,
        "duration_s": round(duration, 3),
    }


def _dollars(cost: Decimal | None) -> float | None:
    return None if cost is None else float(cost)


def cost_text(cost_usd: float | None) -> str:
    """The summary's words for the cost: "cost $0.0123" (four decimals), or why none."""
    return "cost unknown (no price for the model)" if cost_usd is None else f"cost ${cost_usd:.4f}"


def progress_line(progress: dict[str, Any]) -> str:
    filled = int(BAR_WIDTH * progress["percentage"] / 100)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    line = (
        f"[{bar}] {progress['percentage']:5.1f}%  {progress['done']}/{progress['total']}"
        f" functions, {progress['cached']} cached, {progress['failed']} failed,"
        f" {progress['cards']} cards"
    )
    if progress.get("waiting_reason"):
        line += f"  ({progress['waiting_reason']})"
    elif progress.get("current_unit"):
        line += f"  {progress['current_unit'][:40]}"
    return line


class Command(BaseCommand):
    help = "Analyse a local directory or a git URL, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="A directory, or a git URL (https://, ssh://, git@).")
        parser.add_argument("--ref", help="Branch, tag or commit of a git URL.")
        parser.add_argument(
            "--provider",
            choices=PROVIDERS,
            help="Default: anthropic when ANTHROPIC_API_KEY is set, else static.",
        )
        parser.add_argument("--concurrency", type=int, help="AI calls at once (default 10).")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print one JSON object."
        )
        parser.add_argument(
            "--allow-private-hosts",
            action="store_true",
            help="Let a git URL lead to a private, loopback or link-local address "
            "(refused by default, as on the web).",
        )
        parser.add_argument(
            "--format", choices=EXPORT_FORMATS, help="Export the findings in this format."
        )
        parser.add_argument(
            "--output", metavar="FILE", help="Where --format writes (default or -: stdout)."
        )
        parser.add_argument(
            "--fail-on",
            choices=SEVERITIES,
            help="Exit 3 when a finding this severe or more exists (dismissed ones aside).",
        )
        parser.add_argument(
            "--diff",
            metavar="BASE",
            dest="diff_base",
            help="Review only the functions changed since BASE (branch, tag, commit, HEAD~1).",
        )
        parser.add_argument(
            "--upgrade-fallback-reviews",
            action="store_true",
            help="Review again with the primary model what a fallback model reviewed before.",
        )

    def handle(
        self,
        *args: Any,
        source: str,
        ref: str | None,
        provider: str | None,
        concurrency: int | None,
        as_json: bool,
        verbosity: int,
        allow_private_hosts: bool = False,
        diff_base: str | None = None,
        upgrade_fallback_reviews: bool = False,
        **options: Any,
    ) -> None:
        _logs_to_stderr(verbose=verbosity >= 2)
        try:
            self._plan = export_plan(
                format=options.get("format"),
                output=options.get("output"),
                fail_on=options.get("fail_on"),
                as_json=as_json,
            )
        except ValueError as error:
            raise CommandError(str(error), returncode=2) from None
        self._export_out = self.stdout
        if self._plan.to_stdout:  # stdout holds the export alone; the command speaks on stderr
            self.stdout = OutputWrapper(sys.stderr)
        opt_out = private_addresses_allowed() if allow_private_hosts else contextlib.nullcontext()
        with opt_out:
            self._analyse(
                source,
                ref,
                provider,
                concurrency,
                as_json=as_json,
                diff_base=diff_base,
                upgrade_fallback_reviews=upgrade_fallback_reviews,
            )

    def _analyse(
        self,
        source: str,
        ref: str | None,
        provider: str | None,
        concurrency: int | None,
        *,
        as_json: bool,
        diff_base: str | None = None,
        upgrade_fallback_reviews: bool = False,
    ) -> None:
        try:
            analysis = analysis_create(
                source=source,
                ref=ref,
                provider=provider,
                concurrency=concurrency,
                allow_any_path=True,
                diff_base=diff_base,
                upgrade_fallback_reviews=upgrade_fallback_reviews,
            )
        except InvalidAnalysisRequest as error:
            raise CommandError(error.message, returncode=2) from None

        started = time.monotonic()
        show_bar = not as_json and sys.stderr.isatty()
        status = asyncio.run(self._run(analysis.pk, show_bar=show_bar))
        analysis.refresh_from_db()
        summary = result_summary(analysis, duration=time.monotonic() - started)
        if as_json:
            self.stdout.write(json.dumps(summary))
        else:
            self._report(analysis, summary)
        if status not in SUCCESS_STATUSES:
            sys.exit(1)
        self._deliver(analysis)

    def _deliver(self, analysis: Analysis) -> None:
        """Write the export, then apply the CI gate."""
        plan: ExportPlan = self._plan
        if plan.format:
            text = export_analysis(analysis, format=plan.format)
            if plan.to_stdout:
                self._export_out.write(text, ending="")
            else:
                write_export(text, path=plan.output)
        if plan.fail_on:
            over = findings_at_or_above(analysis, severity=plan.fail_on)
            if over:
                self.stderr.write(
                    f"{over} finding(s) at or above {plan.fail_on} severity: failing (exit 3)"
                )
                sys.exit(EXIT_GATE)

    async def _run(self, analysis_id: int, *, show_bar: bool) -> str:
        loop = asyncio.get_running_loop()
        cancelling: list[asyncio.Task] = []

        def cancel() -> None:
            self.stderr.write("\ncancelling (Ctrl+C again to force)...")
            loop.remove_signal_handler(signal.SIGINT)
            cancelling.append(
                loop.create_task(
                    sync_to_async(analysis_cancel)(analysis_id=analysis_id, actor="terminal")
                )
            )

        loop.add_signal_handler(signal.SIGINT, cancel)
        loop.add_signal_handler(signal.SIGTERM, cancel)

        def on_progress(progress: dict[str, Any]) -> None:
            if show_bar:
                sys.stderr.write("\r\033[K" + progress_line(progress))
                sys.stderr.flush()

        try:
            return await run_analysis(analysis_id, on_progress=on_progress)
        finally:
            if show_bar:
                sys.stderr.write("\n")

    def _report(self, analysis: Analysis, summary: dict[str, Any]) -> None:
        self.stdout.write(
            f"analysis #{analysis.pk}: {analysis.status}"
            + (f" ({analysis.status_reason})" if analysis.status_reason else "")
        )
        self.stdout.write(
            f"  {summary['functions_total']} functions: {summary['functions_analyzed']} analysed,"
            f" {summary['functions_cached']} cached, {summary['functions_failed']} failed;"
            f" {summary['cards']} cards; health score {analysis.health_score}"
        )
        self.stdout.write(
            f"  {summary['llm_requests']} AI requests, {summary['input_tokens']} input and"
            f" {summary['output_tokens']} output tokens, {cost_text(summary['cost_usd'])},"
            f" {summary['duration_s']:.1f} s"
        )
        if analysis.diff_base and analysis.functions_selected is not None:
            self.stdout.write(
                f"  changes since {analysis.diff_base}: {analysis.functions_selected} functions"
                f" selected in {len(analysis.diff_files)} files"
            )
        for error in analysis.file_errors[:10]:
            self.stdout.write(f"  file error: {error['path']}: {error['message']}")


def _logs_to_stderr(*, verbose: bool) -> None:
    """stdout is the command's output (one JSON object with --json); logs go to stderr."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    if not verbose:
        root.setLevel(logging.WARNING)

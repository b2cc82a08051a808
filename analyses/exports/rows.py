"""What every export reads of an analysis: its cards with their units, and the models used."""

from __future__ import annotations

from dataclasses import dataclass

from analyses.models import Analysis, Card, CardStatus, CodeUnit
from analyses.selectors import cards_filtered

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}  # most severe first, as findings.SEVERITIES


@dataclass(frozen=True)
class ExportRows:
    cards: list[Card]  # by file and line, each with its unit
    models: list[str]  # the models that reviewed its functions, sorted

    @property
    def open_cards(self) -> list[Card]:
        """The cards a reader still has to look at: all but the dismissed."""
        return [card for card in self.cards if card.status != CardStatus.DISMISSED]


def export_rows(analysis: Analysis) -> ExportRows:
    """Two queries: the cards joined with their units, and the distinct models of its units."""
    cards = list(cards_filtered(analysis).select_related("unit"))
    models = sorted(
        set(
            CodeUnit.objects.filter(analysis=analysis)
            .exclude(model="")
            .order_by()
            .values_list("model", flat=True)
            .distinct()
        )
        | {card.model for card in cards if card.model}
    )
    if not models and analysis.model:
        models = [analysis.model]
    return ExportRows(cards=cards, models=models)


def severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, len(SEVERITY_RANK))

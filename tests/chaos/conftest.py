from __future__ import annotations

import pytest

from tests.chaos.fleet import DRILL_MODEL


@pytest.fixture(autouse=True)
def one_model(settings):
    """Analyses the drill creates itself review with the drill's model alone, as its workers do."""
    settings.EIDOLON_AI_MODELS = [DRILL_MODEL]
    settings.EIDOLON_AI_MODEL = DRILL_MODEL
    settings.EIDOLON_TARGET_FAMILIES = {"anthropic": [DRILL_MODEL]}

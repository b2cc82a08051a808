# Shortcuts for scripts/dev.py, which needs nothing but Python 3.11+.
PYTHON ?= python3

.PHONY: run test setup serve lint format
run:
	$(PYTHON) scripts/dev.py run
test:
	$(PYTHON) scripts/dev.py test
setup:
	$(PYTHON) scripts/dev.py setup
serve:
	$(PYTHON) scripts/dev.py serve
lint:
	.venv/bin/ruff check .
format:
	.venv/bin/ruff format .

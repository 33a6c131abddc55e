.PHONY: setup browser up test lint bench

# One command to set up and run the service on the embedded defaults.
up: setup
	.venv/bin/seal up

# One command to set up and run the whole test suite (what CI runs).
test: setup browser
	.venv/bin/python -m pytest -ra --durations=30 -p no:cacheprovider

setup:
	./scripts/setup.sh

# Debian's chromium, for the console's browser tests (tests/console).
browser:
	./scripts/browser.sh

lint: setup
	.venv/bin/ruff check app workers tests bench

bench: setup
	.venv/bin/python bench/serving.py

# kubeflow-bot: `make run` tries the bot, `make test` checks everything.
# Both create .venv and install the project into it on first use.

SHELL := bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Some machines' pip configuration names local mirrors that may be absent; pip warns
# about each on every look-up.  Keep the rest of what pip says.
QUIET_PIP := { grep -v "^WARNING: Location '.*' is ignored" >&2 || true; }

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing kubeflow-bot and its tools into $(VENV) (first run only)..." >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

# The console on the embedded defaults; with SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET
# set, the Slack app instead.
run: $(STAMP)
	@if [ -n "$$SLACK_BOT_TOKEN" ] && [ -n "$$SLACK_SIGNING_SECRET" ]; then \
		exec $(BIN)/kubeflow-bot serve; \
	else \
		exec $(BIN)/kubeflow-bot console; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy bot handlers provisioning

# Lint, types, the import contract, then every test (the tests start the emulators they need).
# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: lint
	$(BIN)/pytest

bench: $(STAMP)
	@for script in bench/*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis

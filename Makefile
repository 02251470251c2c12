# kubeflow-bot: `make run` tries the bot, `make test` checks everything.
# Both create .venv and install the project into it on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
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

# Lint, the import contract, then every test (the tests start the emulators they need).
# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: lint
	$(BIN)/pytest

bench: $(STAMP)
	@for script in bench/*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis

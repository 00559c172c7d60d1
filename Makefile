# Two commands on a fresh machine: `make study` runs the default study, `make test` runs the tests.
# Both create .venv and install the project into it first (once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist; each test file runs whole in one of them). 2 suits a 2-core machine.
TEST_WORKERS ?= 2

.PHONY: study test setup clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# CPU build of torch where this pip can find one locally; any torch in the project's range otherwise.
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.2,<3"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

study: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/study run study/configs/default.yaml
	$(BIN)/study report --results results/default --out reports

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV)

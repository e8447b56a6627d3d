SHELL := /bin/bash
# The two commands the README opens with:
#   make report   set everything up and run the main job (the comparison report on the lab)
#   make test     lint and run the test suite
PY := .venv/bin/python
REPORTS := reports

.PHONY: setup report test lint format lab-selftest bench clean

setup:
	bash .ci/setup

report: setup
	@mkdir -p $(REPORTS)
	@$(PY) -m compare.cli compare all --lab --json $(REPORTS)/report.json --pcap $(REPORTS)/pcap \
		--html $(REPORTS)/report.html --junit $(REPORTS)/junit.xml \
		| tee $(REPORTS)/report.txt; exit $${PIPESTATUS[0]}

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest

format:
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

lab-selftest: setup
	$(PY) -m compare.cli lab selftest

bench: setup
	$(PY) benchmarks/run_all.py --output $(REPORTS)/bench.md

clean:
	-$(PY) -m compare.cli lab down --all
	rm -rf $(REPORTS) .pytest_cache .ruff_cache .hypothesis

# The two commands a newcomer needs are `make demo` and `make test`; both
# set up what they need on a fresh machine first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Debian packages the lab and the tests run: Kamailio (the PBX), SIPp (simulated
# customers), sox (test audio), nftables (checks `switchboard firewall` rulesets),
# PostgreSQL and Mosquitto (the tests start private
# servers from their programs; see tests/_services.py) and systemd (systemd-analyze
# verifies the unit file) and Chromium (the browser tests drive Debian's build through
# Playwright; Playwright never downloads a browser of its own).
DEB_PACKAGES := kamailio sip-tester sox nftables postgresql mosquitto systemd chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

# Which PostgreSQL and MQTT broker the tests use. "private" (the default, and what CI
# runs): servers the test session starts on free loopback ports and stops at its end,
# whatever runs on this host, so every run takes the fresh-machine path. Anything else:
# the servers named by SWITCHBOARD_TEST_PG_URL and SWITCHBOARD_TEST_MQTT_URL where set,
# private ones where not.
TEST_SERVICES ?= private
# Extra pytest arguments, e.g. make unit PYTEST_ARGS="-m 'postgres or mqtt'".
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test lint typecheck unit bench clean

# Installs only what is missing, so a prepared machine does not touch apt at all.
system-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian packages:" $$missing; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The virtual environment is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/pybabel compile --statistics -d web/translations
	touch $@

# The web tier's catalogues are compiled again whenever a .po changes.
$(VENV)/.catalogues: $(wildcard web/translations/*/LC_MESSAGES/*.po) | $(VENV)/.installed
	$(BIN)/pybabel compile -d web/translations
	touch $@

setup: system-deps $(VENV)/.installed $(VENV)/.catalogues

# The lab (Kamailio, simulated customers, agent phones) and the daemon on it.
demo: setup
	$(BIN)/python -m lab demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# A skip fails the run unless its reason is on tests/skips-allowed.txt. Two pytest
# processes (pytest-xdist), each taking whole test files: most tests wait on lab peers
# rather than compute, so two halve the run on a 2-core machine.
PYTEST_PROCESSES ?= 2
unit: setup
	SWITCHBOARD_TEST_SERVICES=$(TEST_SERVICES) $(BIN)/pytest -n $(PYTEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck unit

# About twenty minutes; the heavy steps are flags of each bench (calls.py --steps 300,
# calls.py --burst 150: see docs/performance.md). inbound.py and web.py need root (they
# time INVITEs on lo with an AF_PACKET socket).
bench: setup
	$(BIN)/python bench/lookup.py
	$(BIN)/python bench/calls.py
	$(BIN)/python bench/inbound.py
	$(BIN)/python bench/web.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The two commands of the README. Each creates .venv and installs into it on first use (and again
# whenever setup.cfg or pyproject.toml change): `make run` (and up, demo) only what the Procfile runs
# (the core and the dashboard's two small packages),
# `make test` (and lint, suite, bench) the extras the tests need, torch included.
VENV ?= .venv
PYTHON ?= python3
RUN_STAMP := $(VENV)/.installed-run
RUN_EXTRAS := dashboard
TEST_STAMP := $(VENV)/.installed-test
TEST_EXTRAS := dashboard,dev,gestures,ml,mqtt,video

.PHONY: run up demo test bench lint suite clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet --config-settings editable_mode=compat -e '.[$(RUN_EXTRAS)]'
	touch $(RUN_STAMP)

$(TEST_STAMP): setup.cfg pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet --config-settings editable_mode=compat -e '.[$(TEST_EXTRAS)]'
	touch $(TEST_STAMP) $(RUN_STAMP)

## run: the Procfile end to end (embedded Redis on a free port, scheduler, sample processor,
##      synthetic camera, result follower, dashboard on a free port) until 100 results arrived, then everything stops
run: $(RUN_STAMP)
	@printf 'REDIS_PORT=%s\nDASHBOARD_PORT=%s\nMETRICS_PORT=0\nCAMERA_FPS=25\nRESULTS_LIMIT=100\n' \
	  $$($(VENV)/bin/python -c 'from pipeline.streams.embedded import free_port; print(free_port(), free_port())') > $(VENV)/run.env
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start -e .env,$(VENV)/run.env

## up: the Procfile with the settings of .env (Redis on 6379), until Ctrl-C
up: $(RUN_STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start

## demo: one worker process, 200 frames, a summary table (frameflow demo)
demo: $(RUN_STAMP)
	$(VENV)/bin/frameflow demo

## test: lint (ruff check, ruff format --check), the whole test suite and the table of what each fault test cost (the MQTT bridge's on Debian's mosquitto, installed if missing:
##       scripts/ensure-mosquitto; the cameras' on GStreamer's RTSP server: scripts/ensure-gstreamer; the dashboard's in Debian's chromium: scripts/ensure-chromium), then Dramatiq's own suite against our broker, then the
##       broker and routing tests again on Debian's Redis 7 (installed if missing: scripts/ensure-redis-server)
##       and on a 3-master Redis Cluster of it
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	scripts/ensure-redis-server >/dev/null
	scripts/ensure-mosquitto >/dev/null
	scripts/ensure-gstreamer >/dev/null
	scripts/ensure-chromium >/dev/null
	rm -f $(VENV)/faults.jsonl
	FRAMEFLOW_FAULT_REPORT=$(abspath $(VENV))/faults.jsonl $(VENV)/bin/python -m pytest
	@echo "What each fault cost (tests/test_chaos.py, test_failover.py, test_soak.py; README: Reliability, Failover)"
	$(VENV)/bin/python scripts/fault_table.py $(VENV)/faults.jsonl
	$(VENV)/bin/python scripts/dramatiq_suite.py
	@echo "Broker and routing tests again on $$(redis-server --version | cut -d' ' -f1-3)"
	FRAMEFLOW_REDIS_SERVER=$$(command -v redis-server) $(VENV)/bin/python -m pytest -q \
		tests/test_broker.py tests/test_broker_processes.py tests/test_routing.py tests/test_queue_bounds.py tests/test_registry.py
	@echo "Broker, routing, processor, scheduler and CLI tests again on a 3-master Redis Cluster"
	FRAMEFLOW_REDIS_SERVER=$$(command -v redis-server) FRAMEFLOW_TEST_REDIS_CLUSTER=1 $(VENV)/bin/python -m pytest -q \
		tests/test_broker.py tests/test_acks.py tests/test_routing.py tests/test_queue_bounds.py tests/test_registry.py \
		tests/test_publish_many.py \
		tests/test_processor.py tests/test_scheduler.py tests/test_actor_routing.py tests/test_processor_failover.py \
		tests/test_cli_inspect.py tests/test_cli_admin.py tests/test_cluster.py tests/test_idle_consumers.py

## suite: Dramatiq's own test suite against our broker core, imported alone (scripts/dramatiq_suite.py)
suite: $(TEST_STAMP)
	$(VENV)/bin/python scripts/dramatiq_suite.py

## bench: the side-by-side benchmark (docs/benchmarks.md); ARGS=--quick for a short run
bench: $(TEST_STAMP)
	$(VENV)/bin/python -m pip install --quiet --config-settings editable_mode=compat -e '.[$(TEST_EXTRAS),bench]'
	$(VENV)/bin/python -m benchmarks $(ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .dramatiq-suite .pytest_cache

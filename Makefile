# Nuntiq connector host. `make demo` shows it working; `make test` proves it.
# Everything needed is installed here: the wasm32-wasip2 target via rustup.
# `make test` also needs the PostgreSQL server on 127.0.0.1:5432 (user postgres,
# trust auth, database `test`); its tests fail, never skip, when it is down.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
# Guest components copied to dist/ (crate names; dist/ uses these names).
GUESTS := acme acme-v0_1 contract-v0_2_0 contract-v0_2_1 bank-loader wrong-world unknown-import future-contract async-export \
  spin-loop memory-hog deep-recursion log-flood outside-allowlist loopback-probe \
  sandbox-escape secret-logger panic-mid-run no-commit giant-batch header-smuggler \
  payload-bomb trespasser secret-splitter nul-writer wasi-http-client host-hog

.PHONY: all build guests host guest-target demo test clean sdk-wit cassette check-authors

all: build

build: host guests

host:
	$(CARGO) build --release --locked -p nuntiq-host -p nuntiq-e2e -p nuntiq-bench --bins

guest-target:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)

guests: guest-target
	$(CARGO) build --locked --profile guest --target $(GUEST_TARGET) $(addprefix -p ,$(GUESTS))
	@mkdir -p dist
	@for g in $(GUESTS); do cp target/$(GUEST_TARGET)/guest/$$(echo $$g | tr - _).wasm dist/$$g.wasm; done
	@echo "guests: $(addprefix dist/,$(addsuffix .wasm,$(GUESTS)))"

demo: build
	tests/demo.sh

test: build
	$(CARGO) test --release --locked -p nuntiq-host -p nuntiq-e2e
	$(CARGO) test --locked -p nuntiq-connector --features testing
	$(CARGO) test --locked --lib -p acme

# Slow (installs cargo-component, wasm-tools, componentize-py and jco the first
# time): builds connectors as authors do and runs them. See README, "Writing a connector".
check-authors: build
	tests/check-authors.sh

# Re-record the Acme cassette the replay test uses (after the connector's requests change).
cassette: build
	tests/record-cassette.sh

# The guest SDK carries its own copy of the contract (a test keeps them equal).
sdk-wit:
	rm -rf guests/sdk/wit && mkdir -p guests/sdk/wit && cp -r wit/connector.wit wit/deps guests/sdk/wit/

clean:
	$(CARGO) clean
	rm -rf dist demo

# The Python contenders live in a venv under bench/ (from PyPI).
BENCH_PY := bench/.venv/bin/python

$(BENCH_PY): bench/requirements.txt
	python3 -m venv bench/.venv
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -r bench/requirements.txt
	@touch $(BENCH_PY)

.PHONY: bench
bench: build $(BENCH_PY)
	target/release/nuntiq-bench run --python $(BENCH_PY) --out bench/results.json
	target/release/nuntiq-bench api-delivery --python $(BENCH_PY) --out bench/results.json
	target/release/nuntiq-bench soak --jobs 1000 --every-s 5 --duration-s 60 --out bench/results.json

#!/usr/bin/env bash
# Runs every test of the project on this machine, installing what is missing first:
#   1. dependencies (RabbitMQ, FerretDB) via scripts/deps.sh, Chromium and an emoji font via apt;
#   2. formatting and lints (cargo fmt --check, cargo clippy -D warnings, cargo machete for
#      unused dependencies);
#   3. Rust unit, integration and end-to-end tests (real RabbitMQ and MongoDB-wire server);
#   4. the web client's Vitest tests, build, and browser end-to-end test in headless Chromium;
#   5. bounded fuzzing of the WebSocket frame parser and token verification (cargo fuzz);
#   6. static validation of the deployment files;
#   7. the benchmark's quick run (a smoke test that the load generator works; no pass/fail
#      on speed).
# Safe to run repeatedly; needs no input (CI runs it with CI=true).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

passed=0
step() {
	printf '\n==> %s\n' "$*"
}
done_step() {
	passed=$((passed + 1))
}

step "dependencies"
bash scripts/deps.sh
# Chromium for the browser tests, and a colour emoji font so that their screenshots show
# reactions as emoji rather than empty boxes.
if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q chromium fonts-noto-color-emoji >/dev/null 2>&1 || {
		apt-get update -q >/dev/null
		apt-get install -y -q chromium fonts-noto-color-emoji >/dev/null
	}
fi
for tool in cargo node npm go; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "test: $tool is required but not installed" >&2
		exit 1
	}
done
done_step

step "format and lints"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Dependencies no crate uses (a `[package.metadata.cargo-machete] ignored` list would name any
# it misreads; none today).
machete_version=0.9.2
if [[ "$(cargo machete --version 2>/dev/null || true)" != *"$machete_version"* ]]; then
	cargo install --locked "cargo-machete@$machete_version" </dev/null
fi
cargo machete
done_step

step "Rust tests (unit, integration, end to end)"
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
done_step

step "web client: unit tests, build, browser end to end"
(
	cd web
	npm ci --no-audit --no-fund --loglevel=error
	npm test
	npm run build
	node --test --test-concurrency=1 e2e/chat.e2e.mjs e2e/rooms.e2e.mjs e2e/resilience.e2e.mjs e2e/changes.e2e.mjs e2e/daily.e2e.mjs
	# The reconnect storm at 200 clients (500 by hand: about 5 minutes here).
	STORM_CLIENTS=200 npm run e2e:storm
)
done_step

step "fuzzing (${FUZZ_SECONDS:-60} s per target)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
done_step

step "deployment files (static validation)"
bash scripts/validate-deploy.sh
done_step

step "benchmark quick run (smoke test)"
bash bench/run.sh quick
done_step

printf '\nsuites: %d passed, 0 failed\n' "$passed"

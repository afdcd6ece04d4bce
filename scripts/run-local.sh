#!/usr/bin/env bash
# Runs the whole system locally: installs and starts RabbitMQ and FerretDB, builds the web
# client and the services (release), starts auth-service, history-service and chat-gateway,
# and prints the URL to open. Ctrl-C stops the services (the dependencies keep running;
# `scripts/deps.sh stop-rabbitmq` / `stop-ferretdb` stop them).
#
# Ports: gateway 8080 (GATEWAY__HTTP__PORT), auth 8081, history 8082; auth-service's metrics
# 9181 on 127.0.0.1 (AUTH__METRICS__PORT). Logs: .local/log/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
log_dir="$root/.local/log"
mkdir -p "$log_dir"

bash scripts/deps.sh

echo "run-local: building the web client"
(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build >/dev/null)
echo "run-local: building the services (release)"
cargo build --release --locked --bins -p auth-service -p history-service -p chat-gateway

pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "run-local: stopping the services"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop INT TERM EXIT

start() {
	local name=$1
	"$root/target/release/$name" >"$log_dir/$name.log" 2>&1 &
	pids+=("$!")
}

wait_ready() {
	local name=$1 port=$2
	for _ in $(seq 1 150); do
		if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	echo "run-local: $name did not become ready; see $log_dir/$name.log" >&2
	tail -n 20 "$log_dir/$name.log" >&2 || true
	exit 1
}

export GATEWAY__WEB__DIR="${GATEWAY__WEB__DIR:-$root/web/dist}"
start auth-service
wait_ready auth-service "${AUTH__HTTP__PORT:-8081}"
start history-service
start chat-gateway
wait_ready history-service "${HISTORY__HTTP__PORT:-8082}"
wait_ready chat-gateway "${GATEWAY__HTTP__PORT:-8080}"

echo
echo "Chat is running: open http://127.0.0.1:${GATEWAY__HTTP__PORT:-8080}"
echo "(logs in .local/log/, Ctrl-C to stop)"
wait

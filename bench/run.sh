#!/usr/bin/env bash
# Runs the benchmarks: our services and the socket.io reference peer side by side, same
# machine, same run, same scenarios.
#
# Usage:
#   bench/run.sh quick    small sizes, a few minutes: checks that the tool works (CI)
#   bench/run.sh full     the issue's sizes, bounded by this machine (about half an hour)
#
# Extra arguments go to `chat-bench run`, e.g. `bench/run.sh full --scenarios fanout`.
# BENCH_NO_BUILD=1 skips `cargo build` and uses the release binaries already in target/.
#
# Builds the release binaries, installs the peer's npm packages, starts RabbitMQ and FerretDB
# if needed (scripts/deps.sh), starts auth-service (twice: a cheap bcrypt cost for the
# scenarios' users and the default cost for the auth scenario), history-service, two
# chat-gateway instances and two peer processes (same split) on free loopback ports with
# database, exchange and queue names unique to this run, runs chat-bench, and stops
# everything it started when it exits, on failure too. Results land in
# bench/results/<timestamp>/ (CSV files, summary.md, output.txt, service logs); a full run
# with no extra options (every scenario) also refreshes bench/results/latest/.
set -euo pipefail

MODE="${1:-}"
EXTRA_OPTIONS=$(($# > 1 ? $# - 1 : 0))
case "$MODE" in
quick | full) shift ;;
*)
	echo "usage: bench/run.sh quick|full [chat-bench run options]" >&2
	exit 2
	;;
esac

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
PEER_DIR="$BENCH_DIR/peers/socketio-seed"
STARTED_AT=$SECONDS

log() { printf 'bench: %s\n' "$*"; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}

# Every connection is a file descriptor, on the load generator's side and on the server's;
# processes started below inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open files limit: $(ulimit -n)"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_ID="bench_$(date -u +%m%d%H%M%S)_$$"
RESULTS="$BENCH_DIR/results/$STAMP"
LOGS="$RESULTS/logs"
mkdir -p "$LOGS"

PIDS=()
CLEANED=0
cleanup() {
	((CLEANED)) && return 0
	CLEANED=1
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [[ -x "$REPO_ROOT/target/release/chat-bench" ]]; then
		timeout 60 "$REPO_ROOT/target/release/chat-bench" drop-databases \
			"${RUN_ID}_auth" "${RUN_ID}_auth_slow" "${RUN_ID}_history" "${RUN_ID}_gateway" \
			"${RUN_ID}_peer" "${RUN_ID}_peer_slow" >/dev/null 2>&1 ||
			log "could not drop the run's databases (${RUN_ID}_*)"
	fi
	# The history queue and the exchange are durable; the gateways' own queues expire.
	if command -v rabbitmqctl >/dev/null || [[ -x /usr/sbin/rabbitmqctl ]]; then
		PATH="$PATH:/usr/sbin" timeout 60 rabbitmqctl -q delete_queue "$RUN_ID.history" \
			>/dev/null 2>&1 || true
	fi
	curl -s -o /dev/null -u guest:guest -X DELETE --max-time 10 \
		"http://127.0.0.1:15672/api/exchanges/%2F/$RUN_ID.events" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http NAME URL SECONDS PID: polls URL until it answers 2xx; fails early if PID died.
wait_http() {
	local name=$1 url=$2 seconds=$3 pid=$4
	local deadline=$((SECONDS + seconds))
	until curl -sf -o /dev/null --max-time 2 "$url"; do
		kill -0 "$pid" 2>/dev/null || die "$name exited during start-up; see $LOGS/$name.log"
		((SECONDS < deadline)) || die "$name did not answer $url within ${seconds}s"
		sleep 0.3
	done
}

# start NAME COMMAND...: runs COMMAND in the background, logging to $LOGS/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	PIDS+=("$!")
	LAST_PID=$!
}

log "dependencies"
bash "$REPO_ROOT/scripts/deps.sh" >"$LOGS/deps.log" 2>&1 || {
	cat "$LOGS/deps.log" >&2
	die "scripts/deps.sh failed"
}

BIN="$REPO_ROOT/target/release"
if [[ "${BENCH_NO_BUILD:-0}" == 1 ]]; then
	for binary in auth-service history-service chat-gateway chat-bench; do
		[[ -x "$BIN/$binary" ]] || die "BENCH_NO_BUILD=1 but $BIN/$binary is missing"
	done
	log "using the release binaries already built (BENCH_NO_BUILD=1)"
else
	log "building release binaries"
	phase_start=$SECONDS
	(cd "$REPO_ROOT" && cargo build --release --quiet \
		-p auth-service -p history-service -p chat-gateway -p chat-bench)
	log "built in $((SECONDS - phase_start)) s"
fi

log "installing the peer's packages (npm ci)"
(cd "$PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$LOGS/npm.log" 2>&1) || {
	cat "$LOGS/npm.log" >&2
	die "npm ci failed"
}

AUTH_PORT=$(free_port)
AUTH_SLOW_PORT=$(free_port)
HISTORY_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
GATEWAY2_PORT=$(free_port)
# Metrics listeners the storm scenario reads (the public ports do not serve /metrics).
HISTORY_METRICS_PORT=$(free_port)
GATEWAY_METRICS_PORT=$(free_port)
PEER_PORT=$(free_port)
PEER_SLOW_PORT=$(free_port)
MONGO_URI="mongodb://127.0.0.1:27017"
EXCHANGE="$RUN_ID.events"
JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

log "starting services (run id $RUN_ID)"
phase_start=$SECONDS
# The services run with their defaults (log level included) except for names and ports, the
# cheap bcrypt cost of the first auth-service, and auth-service's per-address rate limits:
# every request of the load generator comes from one address, which the limits would
# (rightly) throttle. The peer has no such limits.
export AUTH__LIMITS__ENABLED=false
# Two auth-services: each puts its metrics listener on a free port of its own, and both sign
# with the committed test-only key, named explicitly (without a key each would create a key
# file of its own in the working directory).
export AUTH__METRICS__PORT=0
AUTH__JWT__PRIVATE_KEY_PEM="$(cat "$REPO_ROOT/auth-service/config/dev-only-signing-key.pem")"
export AUTH__JWT__PRIVATE_KEY_PEM
export AUTH__AMQP__EXCHANGE="$EXCHANGE"
start auth env AUTH__HTTP__PORT="$AUTH_PORT" AUTH__MONGODB__DATABASE="${RUN_ID}_auth" \
	AUTH__PASSWORD__BCRYPT_COST=4 "$BIN/auth-service"
AUTH_PID=$LAST_PID
start auth-slow env AUTH__HTTP__PORT="$AUTH_SLOW_PORT" \
	AUTH__MONGODB__DATABASE="${RUN_ID}_auth_slow" "$BIN/auth-service"
AUTH_SLOW_PID=$LAST_PID
wait_http auth "http://127.0.0.1:$AUTH_PORT/health/live" 60 "$AUTH_PID"
wait_http auth-slow "http://127.0.0.1:$AUTH_SLOW_PORT/health/live" 60 "$AUTH_SLOW_PID"

start history env HISTORY__HTTP__PORT="$HISTORY_PORT" HISTORY__METRICS__PORT="$HISTORY_METRICS_PORT" \
	HISTORY__MONGODB__DATABASE="${RUN_ID}_history" \
	HISTORY__AMQP__EXCHANGE="$EXCHANGE" HISTORY__AMQP__QUEUE="$RUN_ID.history" \
	HISTORY__AUTH__URL="http://127.0.0.1:$AUTH_PORT" HISTORY__ROOMS__CREATE_PER_HOUR=100000 \
	"$BIN/history-service"
HISTORY_PID=$LAST_PID
wait_http history "http://127.0.0.1:$HISTORY_PORT/health/ready" 60 "$HISTORY_PID"

GATEWAY_PIDS=()
for n in 1 2; do
	port=$GATEWAY_PORT
	metrics_port=$GATEWAY_METRICS_PORT
	name=gateway
	if ((n == 2)); then
		port=$GATEWAY2_PORT
		metrics_port=0
		name=gateway2
	fi
	start "$name" env GATEWAY__HTTP__PORT="$port" GATEWAY__METRICS__PORT="$metrics_port" \
		GATEWAY__AMQP__EXCHANGE="$EXCHANGE" \
		GATEWAY__AMQP__INSTANCE_ID="$RUN_ID-gw$n" \
		GATEWAY__MONGODB__DATABASE="${RUN_ID}_gateway" \
		GATEWAY__AUTH__URL="http://127.0.0.1:$AUTH_PORT" \
		GATEWAY__HISTORY__URL="http://127.0.0.1:$HISTORY_PORT" \
		GATEWAY__WEB__DIR="$RESULTS/no-web" "$BIN/chat-gateway"
	GATEWAY_PIDS+=("$LAST_PID")
	wait_http "$name" "http://127.0.0.1:$port/health/ready" 60 "$LAST_PID"
done

start peer env PORT="$PEER_PORT" MONGODB_URI="$MONGO_URI/${RUN_ID}_peer" \
	JWT_SECRET="$JWT_SECRET" BCRYPT_ROUNDS=4 node "$PEER_DIR/server.js"
PEER_PID=$LAST_PID
start peer-slow env PORT="$PEER_SLOW_PORT" MONGODB_URI="$MONGO_URI/${RUN_ID}_peer_slow" \
	JWT_SECRET="$JWT_SECRET" node "$PEER_DIR/server.js"
PEER_SLOW_PID=$LAST_PID
wait_http peer "http://127.0.0.1:$PEER_PORT/health/live" 60 "$PEER_PID"
wait_http peer-slow "http://127.0.0.1:$PEER_SLOW_PORT/health/live" 60 "$PEER_SLOW_PID"

# Shared infrastructure counts for the CPU columns of whichever side uses it.
SHARED_PIDS=()
if [[ -r "$REPO_ROOT/.local/ferretdb/ferretdb.pid" ]]; then
	SHARED_PIDS+=(--ours-pid "ferretdb=$(cat "$REPO_ROOT/.local/ferretdb/ferretdb.pid")")
	SHARED_PIDS+=(--peer-pid "ferretdb=$(cat "$REPO_ROOT/.local/ferretdb/ferretdb.pid")")
fi
RABBIT_PID=$(PATH="$PATH:/usr/sbin" timeout 30 rabbitmqctl -q eval 'os:getpid().' 2>/dev/null |
	tr -dc '0-9' || true)
if [[ -n "$RABBIT_PID" ]]; then
	SHARED_PIDS+=(--ours-pid "rabbitmq=$RABBIT_PID")
fi

log "services up in $((SECONDS - phase_start)) s; running the $MODE scenarios"
phase_start=$SECONDS
set +e
"$BIN/chat-bench" run --profile "$MODE" --out "$RESULTS" --user-prefix "u$$" \
	--mongo "$MONGO_URI" \
	--ours-gateway "127.0.0.1:$GATEWAY_PORT" --ours-gateway "127.0.0.1:$GATEWAY2_PORT" \
	--ours-auth "http://127.0.0.1:$AUTH_PORT" --ours-auth-slow "http://127.0.0.1:$AUTH_SLOW_PORT" \
	--ours-db "${RUN_ID}_history" --ours-history "http://127.0.0.1:$HISTORY_PORT" \
	--ours-history-metrics "http://127.0.0.1:$HISTORY_METRICS_PORT/metrics" \
	--ours-gateway-metrics "http://127.0.0.1:$GATEWAY_METRICS_PORT/metrics" \
	--ours-pid "gateway=${GATEWAY_PIDS[0]}" --ours-pid "gateway2=${GATEWAY_PIDS[1]}" \
	--ours-pid "history=$HISTORY_PID" \
	--peer "127.0.0.1:$PEER_PORT" --peer-slow "127.0.0.1:$PEER_SLOW_PORT" \
	--peer-db "${RUN_ID}_peer" --peer-pid "node=$PEER_PID" \
	"${SHARED_PIDS[@]}" "$@" 2>&1 | tee "$RESULTS/output.txt"
status=${PIPESTATUS[0]}
set -e

cleanup
if ((status == 0)) && [[ "$MODE" == full ]] && ((EXTRA_OPTIONS == 0)); then
	rm -rf "$BENCH_DIR/results/latest"
	mkdir -p "$BENCH_DIR/results/latest"
	cp "$RESULTS"/*.csv "$RESULTS/summary.md" "$RESULTS/output.txt" "$BENCH_DIR/results/latest/"
	log "bench/results/latest refreshed; charts: python bench/plot.py bench/results/latest"
fi
log "scenarios took $((SECONDS - phase_start)) s, the whole $MODE run $((SECONDS - STARTED_AT)) s"
log "results in ${RESULTS#"$REPO_ROOT"/}"
# The closing line: every scenario measured (passed) or not (failed); never a verdict on speed.
grep -E '^scenarios: [0-9]+ passed, [0-9]+ failed$' "$RESULTS/output.txt" | tail -1 ||
	echo "scenarios: 0 passed, 1 failed"
exit "$status"

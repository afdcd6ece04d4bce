#!/usr/bin/env bash
# A RabbitMQ node and a FerretDB of their own for the fault suite (e2e/tests/faults.rs), which
# stops and restarts them. They listen on other ports than the shared ones scripts/deps.sh
# starts (5672, 27017), so other tests and benchmarks can use those at the same time.
#
#   RabbitMQ  node chatfault@localhost, AMQP 127.0.0.1:5673, distribution port 25673, no
#             plugins (no management listener), data and logs under .local/fault/rabbitmq
#   FerretDB  127.0.0.1:27018, SQLite data under .local/fault/ferretdb
#
# Usage:
#   scripts/fault-deps.sh [start]          start both (installs/builds what is missing); a
#                                          FerretDB that was not running starts empty
#                                          (start-ferretdb keeps its data)
#   scripts/fault-deps.sh stop | status
#   scripts/fault-deps.sh start-rabbitmq | stop-rabbitmq | restart-rabbitmq
#   scripts/fault-deps.sh start-ferretdb | stop-ferretdb | restart-ferretdb
#   scripts/fault-deps.sh stop-when-gone PID
#                                          stop both once process PID has exited (the fault
#                                          suite registers itself so they never outlive it),
#                                          unless another registered process is still alive
#
# Ports and names can be changed with FAULT_RABBITMQ_PORT, FAULT_RABBITMQ_DIST_PORT,
# FAULT_RABBITMQ_NODENAME and FAULT_FERRETDB_PORT (the fault suite reads the two ports too).
# Idempotent, never reads stdin.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

FAULT_DIR="$LOCAL_DIR/fault"
FAULT_LOG_DIR="$FAULT_DIR/log"

FAULT_RABBITMQ_NODENAME="${FAULT_RABBITMQ_NODENAME:-chatfault@localhost}"
FAULT_RABBITMQ_HOST=127.0.0.1
FAULT_RABBITMQ_PORT="${FAULT_RABBITMQ_PORT:-5673}"
FAULT_RABBITMQ_DIST_PORT="${FAULT_RABBITMQ_DIST_PORT:-25673}"
FAULT_RABBITMQ_DIR="$FAULT_DIR/rabbitmq"

FAULT_FERRETDB_HOST=127.0.0.1
FAULT_FERRETDB_PORT="${FAULT_FERRETDB_PORT:-27018}"
FAULT_FERRETDB_DIR="$FAULT_DIR/ferretdb"
FAULT_FERRETDB_PIDFILE="$FAULT_FERRETDB_DIR/ferretdb.pid"
FAULT_FERRETDB_LOG="$FAULT_LOG_DIR/ferretdb.log"

fault_log() { printf 'fault-deps: %s\n' "$*"; }
fault_die() {
	printf 'fault-deps: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ: a second node of the Debian package. Its wrapper switches to the rabbitmq user and
# keeps the environment, so the node's names, ports and directories are all given as
# RABBITMQ_* variables (passed through `env` so that sudo's env_reset cannot drop them).

rabbitmq_vars() {
	rabbitmq_node_vars "$FAULT_RABBITMQ_DIR" "$FAULT_RABBITMQ_NODENAME" "$FAULT_RABBITMQ_DIST_PORT" \
		"$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT"
}

# fault_rabbitmq CMD ARGS...: runs a RabbitMQ command (rabbitmq-server, rabbitmqctl) as root
# with this node's environment.
fault_rabbitmq() {
	local vars
	mapfile -t vars < <(rabbitmq_vars)
	as_root env "${vars[@]}" "$@" </dev/null
}

# The node runs as the rabbitmq user: its directories must belong to it. Its own (empty)
# plugin list keeps the shared node's management plugin, and so port 15672, out of it; its
# own config and env files keep /etc/rabbitmq's settings out too.
rabbitmq_prepare() {
	local dir=$FAULT_RABBITMQ_DIR
	mkdir -p "$dir/mnesia" "$dir/log" "$FAULT_LOG_DIR"
	[[ -s $dir/enabled_plugins ]] || echo '[].' >"$dir/enabled_plugins"
	# Rewritten each time, so a changed FAULT_RABBITMQ_PORT takes effect.
	cat >"$dir/rabbitmq.conf" <<-EOF
		# Written by scripts/fault-deps.sh: the fault suite's own node.
		listeners.tcp.default = $FAULT_RABBITMQ_HOST:$FAULT_RABBITMQ_PORT
		log.file.level = warning
	EOF
	[[ -f $dir/advanced.config ]] || echo '[].' >"$dir/advanced.config"
	[[ -f $dir/rabbitmq-env.conf ]] || : >"$dir/rabbitmq-env.conf"
	if id rabbitmq >/dev/null 2>&1; then
		as_root chown -R rabbitmq:rabbitmq "$dir"
	fi
}

fault_rabbitmq_log_tail() {
	local f
	for f in "$FAULT_LOG_DIR/rabbitmq-start.log" "$FAULT_RABBITMQ_DIR"/log/*.log; do
		[[ -s $f ]] || continue
		printf -- '--- tail of %s ---\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# fault_rabbitmq_pid: the node's VM pid when it is running (booting included).
fault_rabbitmq_pid() {
	local pid
	[[ -s $FAULT_RABBITMQ_DIR/rabbitmq.pid ]] || return 1
	pid="$(<"$FAULT_RABBITMQ_DIR/rabbitmq.pid")"
	[[ $pid =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */beam.smp ]] || return 1
	echo "$pid"
}

fault_rabbitmq_start() {
	if port_open "$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT"; then
		fault_log "rabbitmq: already running on $FAULT_RABBITMQ_HOST:$FAULT_RABBITMQ_PORT"
		return 0
	fi
	mkdir -p "$LOG_DIR"
	rabbitmq_install
	rabbitmq_prepare
	local started=$SECONDS
	if ! fault_rabbitmq_pid >/dev/null; then
		fault_rabbitmq rabbitmq-server -detached >>"$FAULT_LOG_DIR/rabbitmq-start.log" 2>&1 9>&- ||
			{ fault_rabbitmq_log_tail; fault_die "rabbitmq-server -detached failed"; }
	fi
	if ! wait_port "$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT" "$RABBITMQ_START_TIMEOUT"; then
		fault_rabbitmq_log_tail
		fault_die "rabbitmq: $FAULT_RABBITMQ_HOST:$FAULT_RABBITMQ_PORT did not answer within ${RABBITMQ_START_TIMEOUT}s"
	fi
	fault_log "rabbitmq: $FAULT_RABBITMQ_NODENAME started on $FAULT_RABBITMQ_HOST:$FAULT_RABBITMQ_PORT (took $((SECONDS - started))s)"
}

fault_rabbitmq_stop() {
	if ! command -v rabbitmqctl >/dev/null; then
		fault_log "rabbitmq: not installed"
		return 0
	fi
	if ! port_open "$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT" && ! fault_rabbitmq_pid >/dev/null; then
		fault_log "rabbitmq: $FAULT_RABBITMQ_NODENAME already stopped"
		return 0
	fi
	# `shutdown` returns once the Erlang VM has exited.
	fault_rabbitmq rabbitmqctl -q shutdown >/dev/null 2>&1 ||
		fault_rabbitmq rabbitmqctl -q stop >/dev/null 2>&1 || true
	wait_port_closed "$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT" 30 ||
		fault_die "rabbitmq: port $FAULT_RABBITMQ_PORT still answers after rabbitmqctl shutdown"
	fault_log "rabbitmq: $FAULT_RABBITMQ_NODENAME stopped"
}

# ---------------------------------------------------------------------------------------------
# FerretDB: the binary scripts/deps.sh builds, on its own port and data directory. Processes
# are found by pid file only (the shared FerretDB runs the same binary).

fault_ferretdb_pid() {
	local pid
	[[ -s $FAULT_FERRETDB_PIDFILE ]] || return 1
	pid="$(<"$FAULT_FERRETDB_PIDFILE")"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$FERRETDB_BIN"* ]] || return 1
	grep -qF -- "--listen-addr=$FAULT_FERRETDB_HOST:$FAULT_FERRETDB_PORT" "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

# fault_ferretdb_start [fresh]: with `fresh`, a FerretDB that is not running starts with no
# data (every fault scenario uses a database of its own, so older ones are only disk space).
fault_ferretdb_start() {
	if port_open "$FAULT_FERRETDB_HOST" "$FAULT_FERRETDB_PORT"; then
		fault_log "ferretdb: already running on $FAULT_FERRETDB_HOST:$FAULT_FERRETDB_PORT"
		return 0
	fi
	ferretdb_install
	if [[ ${1:-} == fresh ]]; then
		rm -rf "$FAULT_FERRETDB_DIR/data"
	fi
	mkdir -p "$FAULT_FERRETDB_DIR/data" "$FAULT_FERRETDB_DIR/state" "$FAULT_LOG_DIR"
	local started=$SECONDS pid
	setsid nohup "$FERRETDB_BIN" \
		--handler=sqlite \
		--sqlite-url="file:$FAULT_FERRETDB_DIR/data/" \
		--listen-addr="$FAULT_FERRETDB_HOST:$FAULT_FERRETDB_PORT" \
		--telemetry=disable \
		--state-dir="$FAULT_FERRETDB_DIR/state" \
		--debug-addr=- \
		</dev/null >>"$FAULT_FERRETDB_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$FAULT_FERRETDB_PIDFILE"
	local deadline=$((SECONDS + FERRETDB_START_TIMEOUT))
	until port_open "$FAULT_FERRETDB_HOST" "$FAULT_FERRETDB_PORT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 25 "$FAULT_FERRETDB_LOG" >&2 || true
			rm -f "$FAULT_FERRETDB_PIDFILE"
			fault_die "ferretdb: exited during start-up"
		fi
		((SECONDS < deadline)) ||
			fault_die "ferretdb: $FAULT_FERRETDB_HOST:$FAULT_FERRETDB_PORT did not answer within ${FERRETDB_START_TIMEOUT}s"
		sleep 0.1
	done
	fault_log "ferretdb: started on $FAULT_FERRETDB_HOST:$FAULT_FERRETDB_PORT (pid $pid, took $((SECONDS - started))s)"
}

fault_ferretdb_stop() {
	local pid
	if ! pid="$(fault_ferretdb_pid)"; then
		rm -f "$FAULT_FERRETDB_PIDFILE"
		port_open "$FAULT_FERRETDB_HOST" "$FAULT_FERRETDB_PORT" &&
			fault_die "ferretdb: $FAULT_FERRETDB_PORT answers but not from our pid file; not touching it"
		fault_log "ferretdb: already stopped"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 10))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$FAULT_FERRETDB_PIDFILE"
	wait_port_closed "$FAULT_FERRETDB_HOST" "$FAULT_FERRETDB_PORT" 10 ||
		fault_die "ferretdb: port $FAULT_FERRETDB_PORT still answers after stopping pid $pid"
	fault_log "ferretdb: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
# Owners: processes (fault suite runs) the dependencies are kept for.

OWNERS_DIR="$FAULT_DIR/owners"

fault_stop() {
	fault_rabbitmq_stop
	fault_ferretdb_stop
}

status() {
	local name=$1 host=$2 port=$3
	if port_open "$host" "$port"; then
		fault_log "$name: running on $host:$port"
	else
		fault_log "$name: not running ($host:$port does not answer)"
	fi
}

usage() { sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

command=${1:-start}
if [[ $command == _watch ]]; then
	owners_watch "$OWNERS_DIR" "${2:?pid}" "$FAULT_DIR/deps.lock" fault_stop
	exit 0
fi

mkdir -p "$FAULT_DIR" "$LOG_DIR"
exec 9>"$FAULT_DIR/deps.lock"
flock -w 600 9 || fault_die "timed out waiting for $FAULT_DIR/deps.lock"

case "$command" in
up | start)
	fault_rabbitmq_start
	fault_ferretdb_start fresh
	;;
stop | down) fault_stop ;;
status)
	status rabbitmq "$FAULT_RABBITMQ_HOST" "$FAULT_RABBITMQ_PORT"
	status ferretdb "$FAULT_FERRETDB_HOST" "$FAULT_FERRETDB_PORT"
	;;
start-rabbitmq) fault_rabbitmq_start ;;
stop-rabbitmq) fault_rabbitmq_stop ;;
restart-rabbitmq) fault_rabbitmq_stop && fault_rabbitmq_start ;;
start-ferretdb) fault_ferretdb_start ;;
stop-ferretdb) fault_ferretdb_stop ;;
restart-ferretdb) fault_ferretdb_stop && fault_ferretdb_start ;;
stop-when-gone)
	mkdir -p "$FAULT_LOG_DIR"
	owners_add "$OWNERS_DIR" "${2:?usage: stop-when-gone PID}" "${BASH_SOURCE[0]}" "$FAULT_LOG_DIR/watch.log" &&
		fault_log "stopping both once process $2 has exited"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac

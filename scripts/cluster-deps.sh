#!/usr/bin/env bash
# A 3-node RabbitMQ cluster of its own for the cluster fault test (e2e/tests/cluster.rs), which
# kills, stops and restarts its nodes. Three nodes of the Debian package on this machine, each
# with its own node name, ports and data directory, sharing the rabbitmq user's Erlang cookie
# and joined with `rabbitmqctl join_cluster`. The shared broker (5672, scripts/deps.sh) and the
# fault suite's node (5673, scripts/fault-deps.sh) are never touched.
#
#   node N (1..3)  chatcluster<N>@localhost, AMQP 127.0.0.1:<5673+N>, distribution port
#                  <25673+N>, no plugins, data and logs under .local/cluster/node<N>
#
# Usage:
#   scripts/cluster-deps.sh [start]      start the three nodes and join them (installs
#                                        rabbitmq-server when missing); a cluster none of whose
#                                        nodes runs is made anew, empty
#   scripts/cluster-deps.sh stop | status
#   scripts/cluster-deps.sh uris         the three AMQP URIs (guest/guest), one a line
#   scripts/cluster-deps.sh kill-node N  SIGKILL of node N's Erlang VM (no shutdown code runs)
#   scripts/cluster-deps.sh stop-node N  `rabbitmqctl shutdown` of node N (a rolling restart's
#                                        first half)
#   scripts/cluster-deps.sh start-node N starts node N again with its data: it rejoins
#   scripts/cluster-deps.sh stop-when-gone PID
#                                        stop the cluster once process PID has exited (the
#                                        test registers itself so the nodes never outlive it),
#                                        unless another registered process is still alive
#
# Ports can be moved with CLUSTER_RABBITMQ_BASE_PORT (AMQP port of node 1, default 5674) and
# CLUSTER_RABBITMQ_DIST_BASE_PORT (default 25674); the test reads the first too.
# Idempotent, never reads stdin.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

CLUSTER_DIR="$LOCAL_DIR/cluster"
CLUSTER_LOG_DIR="$CLUSTER_DIR/log"
CLUSTER_HOST=127.0.0.1
CLUSTER_RABBITMQ_BASE_PORT="${CLUSTER_RABBITMQ_BASE_PORT:-5674}"
CLUSTER_RABBITMQ_DIST_BASE_PORT="${CLUSTER_RABBITMQ_DIST_BASE_PORT:-25674}"
NODES=(1 2 3)

cluster_log() { printf 'cluster-deps: %s\n' "$*"; }
cluster_die() {
	printf 'cluster-deps: error: %s\n' "$*" >&2
	exit 1
}

node_name() { echo "chatcluster$1@localhost"; }
node_port() { echo $((CLUSTER_RABBITMQ_BASE_PORT + $1 - 1)); }
node_dist_port() { echo $((CLUSTER_RABBITMQ_DIST_BASE_PORT + $1 - 1)); }
node_dir() { echo "$CLUSTER_DIR/node$1"; }

check_node() {
	[[ ${1:-} =~ ^[123]$ ]] || cluster_die "a node number (1, 2 or 3) is required, not \`${1:-}\`"
}

# The Debian wrapper switches to the rabbitmq user and keeps the environment: each node's
# names, ports and directories are RABBITMQ_* variables (passed through `env`). All nodes run
# as that user, so they share its Erlang cookie (/var/lib/rabbitmq/.erlang.cookie).
node_vars() {
	local n=$1
	rabbitmq_node_vars "$(node_dir "$n")" "$(node_name "$n")" "$(node_dist_port "$n")" "$CLUSTER_HOST" "$(node_port "$n")"
}

# on_node N CMD ARGS...: a RabbitMQ command (rabbitmq-server, rabbitmqctl) as root with node
# N's environment.
on_node() {
	local n=$1 vars
	shift
	mapfile -t vars < <(node_vars "$n")
	as_root env "${vars[@]}" "$@" </dev/null
}

# node_prepare N [fresh]: the node's directories and files, owned by the rabbitmq user; with
# `fresh`, without the data of an earlier cluster.
node_prepare() {
	local n=$1 dir
	dir="$(node_dir "$n")"
	if [[ ${2:-} == fresh ]]; then
		rm -rf "$dir/mnesia"
	fi
	mkdir -p "$dir/mnesia" "$dir/log" "$CLUSTER_LOG_DIR"
	[[ -s $dir/enabled_plugins ]] || echo '[].' >"$dir/enabled_plugins"
	cat >"$dir/rabbitmq.conf" <<-EOF
		# Written by scripts/cluster-deps.sh: node $n of the cluster test's own cluster.
		listeners.tcp.default = $CLUSTER_HOST:$(node_port "$n")
		log.file.level = warning
	EOF
	[[ -f $dir/advanced.config ]] || echo '[].' >"$dir/advanced.config"
	[[ -f $dir/rabbitmq-env.conf ]] || : >"$dir/rabbitmq-env.conf"
	if id rabbitmq >/dev/null 2>&1; then
		as_root chown -R rabbitmq:rabbitmq "$dir"
	fi
}

node_log_tail() {
	local f
	for f in "$CLUSTER_LOG_DIR/node$1-start.log" "$(node_dir "$1")"/log/*.log; do
		[[ -s $f ]] || continue
		printf -- '--- tail of %s ---\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# node_pid N: the node's Erlang VM pid while it runs (booting included).
node_pid() {
	local pidfile pid
	pidfile="$(node_dir "$1")/rabbitmq.pid"
	[[ -s $pidfile ]] || return 1
	pid="$(<"$pidfile")"
	[[ $pid =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */beam.smp ]] || return 1
	# The node name is in the VM's environment, not its command line.
	grep -qxF "RABBITMQ_NODENAME=$(node_name "$1")" < <(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || return 1
	echo "$pid"
}

node_running() { port_open "$CLUSTER_HOST" "$(node_port "$1")"; }

# node_launch N [fresh]: starts node N's VM detached unless it runs; does not wait.
node_launch() {
	local n=$1
	node_running "$n" && return 0
	node_pid "$n" >/dev/null && return 0
	node_prepare "$n" "${2:-}"
	on_node "$n" rabbitmq-server -detached >>"$CLUSTER_LOG_DIR/node$n-start.log" 2>&1 9>&- ||
		{ node_log_tail "$n"; cluster_die "rabbitmq-server -detached of node $n failed"; }
}

node_wait() {
	local n=$1
	if ! wait_port "$CLUSTER_HOST" "$(node_port "$n")" "$RABBITMQ_START_TIMEOUT"; then
		node_log_tail "$n"
		cluster_die "node $n: $CLUSTER_HOST:$(node_port "$n") did not answer within ${RABBITMQ_START_TIMEOUT}s"
	fi
}

# clustered N: true when node N's cluster includes node 1.
clustered() {
	# Read whole first: `grep -q` stopping early would fail the pipeline (pipefail).
	local status
	status="$(on_node "$1" rabbitmqctl -q cluster_status --formatter json 2>/dev/null)" || return 1
	grep -qF "\"$(node_name 1)\"" <<<"$status"
}

node_join() {
	local n=$1
	clustered "$n" && return 0
	local log="$CLUSTER_LOG_DIR/node$n-join.log"
	on_node "$n" rabbitmqctl -q stop_app >>"$log" 2>&1
	on_node "$n" rabbitmqctl -q reset >>"$log" 2>&1
	on_node "$n" timeout 120 rabbitmqctl -q join_cluster "$(node_name 1)" >>"$log" 2>&1 ||
		{ tail -n 25 "$log" >&2; node_log_tail "$n"; cluster_die "node $n could not join $(node_name 1)"; }
	on_node "$n" rabbitmqctl -q start_app >>"$log" 2>&1
	node_wait "$n"
	cluster_log "node $n joined $(node_name 1)"
}

cluster_start() {
	rabbitmq_install
	mkdir -p "$CLUSTER_LOG_DIR"
	local started=$SECONDS n any=0
	for n in "${NODES[@]}"; do
		if node_running "$n" || node_pid "$n" >/dev/null; then any=1; fi
	done
	# A cluster that is wholly down is made anew: its nodes would otherwise wait for one
	# another in the order they stopped, and the test needs no data from an earlier run.
	local mode=""
	((any)) || mode=fresh
	# Launched together: restarting nodes of one cluster wait for their peers.
	for n in "${NODES[@]}"; do node_launch "$n" "$mode"; done
	for n in "${NODES[@]}"; do node_wait "$n"; done
	for n in 2 3; do node_join "$n"; done
	cluster_log "cluster of $(node_name 1), $(node_name 2), $(node_name 3) running on ports $(node_port 1)-$(node_port 3) (took $((SECONDS - started))s)"
}

node_start() {
	local n=$1 started=$SECONDS
	rabbitmq_install
	node_launch "$n"
	node_wait "$n"
	cluster_log "node $n: $(node_name "$n") running on $CLUSTER_HOST:$(node_port "$n") (took $((SECONDS - started))s)"
}

node_stop() {
	local n=$1
	if ! node_running "$n" && ! node_pid "$n" >/dev/null; then
		cluster_log "node $n: already stopped"
		return 0
	fi
	# `shutdown` returns once the Erlang VM has exited.
	on_node "$n" rabbitmqctl -q shutdown >/dev/null 2>&1 ||
		on_node "$n" rabbitmqctl -q stop >/dev/null 2>&1 || true
	wait_port_closed "$CLUSTER_HOST" "$(node_port "$n")" 30 ||
		cluster_die "node $n: port $(node_port "$n") still answers after rabbitmqctl shutdown"
	cluster_log "node $n: stopped"
}

node_kill() {
	local n=$1 pid
	pid="$(node_pid "$n")" || cluster_die "node $n is not running"
	kill -KILL "$pid"
	local deadline=$((SECONDS + 10))
	while kill -0 "$pid" 2>/dev/null; do
		((SECONDS < deadline)) || cluster_die "node $n: pid $pid survived SIGKILL"
		sleep 0.05
	done
	cluster_log "node $n: killed (pid $pid)"
}

cluster_stop() {
	local n
	command -v rabbitmqctl >/dev/null || {
		cluster_log "rabbitmq-server is not installed"
		return 0
	}
	# Together: a node that stops alone while its peers run would be the one to wait for.
	local pids=()
	for n in "${NODES[@]}"; do
		node_stop "$n" &
		pids+=($!)
	done
	local failed=0 pid
	for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
	((failed == 0)) || cluster_die "a node did not stop"
}

cluster_status() {
	local n
	for n in "${NODES[@]}"; do
		if node_running "$n"; then
			cluster_log "node $n: $(node_name "$n") running on $CLUSTER_HOST:$(node_port "$n")"
		else
			cluster_log "node $n: not running ($CLUSTER_HOST:$(node_port "$n") does not answer)"
		fi
	done
}

# ---------------------------------------------------------------------------------------------
# Owners: processes (test runs) the cluster is kept for.

OWNERS_DIR="$CLUSTER_DIR/owners"

usage() { sed -n '2,28s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

command=${1:-start}
if [[ $command == _watch ]]; then
	owners_watch "$OWNERS_DIR" "${2:?pid}" "$CLUSTER_DIR/deps.lock" cluster_stop
	exit 0
fi

mkdir -p "$CLUSTER_DIR" "$LOG_DIR"
exec 9>"$CLUSTER_DIR/deps.lock"
flock -w 600 9 || cluster_die "timed out waiting for $CLUSTER_DIR/deps.lock"

case "$command" in
up | start) cluster_start ;;
stop | down) cluster_stop ;;
status) cluster_status ;;
uris)
	for n in "${NODES[@]}"; do
		echo "amqp://guest:guest@$CLUSTER_HOST:$(node_port "$n")/%2f"
	done
	;;
kill-node) check_node "${2:-}" && node_kill "$2" ;;
stop-node) check_node "${2:-}" && node_stop "$2" ;;
start-node) check_node "${2:-}" && node_start "$2" ;;
stop-when-gone)
	mkdir -p "$CLUSTER_LOG_DIR"
	owners_add "$OWNERS_DIR" "${2:?usage: stop-when-gone PID}" "${BASH_SOURCE[0]}" "$CLUSTER_LOG_DIR/watch.log" &&
		cluster_log "stopping the cluster once process $2 has exited"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac

#!/usr/bin/env bash
# A RabbitMQ node and a FerretDB that accept TLS only, for the TLS tests (e2e/tests/tls.rs),
# with certificates of a private CA made when they start. Other ports than every other script's
# (5672 and 27017 scripts/deps.sh, 5673 and 27018 scripts/fault-deps.sh, 5674-5676
# scripts/cluster-deps.sh), so they run beside all of them.
#
#   certificates  .local/tls/certs: ca.pem (a CA made for this run), server.pem and server.key
#                 (signed by it, for localhost and 127.0.0.1); made anew whenever neither server
#                 runs, never committed
#   RabbitMQ      node chattls@localhost, AMQPS 127.0.0.1:5671 (no plain AMQP listener),
#                 distribution port 25671, no plugins, data and logs under .local/tls/rabbitmq
#   FerretDB      TLS 127.0.0.1:27019 (no plain listener), SQLite data under .local/tls/ferretdb
#
# Usage:
#   scripts/tls-deps.sh [start]          start both (installs rabbitmq-server, builds FerretDB
#                                        and makes the certificates when missing)
#   scripts/tls-deps.sh stop | status
#   scripts/tls-deps.sh ca               the CA file's path
#   scripts/tls-deps.sh stop-when-gone PID
#                                        stop both once process PID has exited (the TLS tests
#                                        register themselves so the servers never outlive them),
#                                        unless another registered process is still alive
#
# A node or FerretDB left on these ports by a checkout whose directory was deleted is stopped
# and replaced; one of a checkout that still exists is an error naming it. Ports and the node
# name can be changed with TLS_RABBITMQ_PORT, TLS_RABBITMQ_DIST_PORT, TLS_RABBITMQ_NODENAME and
# TLS_FERRETDB_PORT (the tests read the two ports too). Idempotent, never reads stdin.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TLS_DIR="$LOCAL_DIR/tls"
TLS_LOG_DIR="$TLS_DIR/log"
CERT_DIR="$TLS_DIR/certs"
TLS_HOST=127.0.0.1

TLS_RABBITMQ_NODENAME="${TLS_RABBITMQ_NODENAME:-chattls@localhost}"
TLS_RABBITMQ_PORT="${TLS_RABBITMQ_PORT:-5671}"
TLS_RABBITMQ_DIST_PORT="${TLS_RABBITMQ_DIST_PORT:-25671}"
TLS_RABBITMQ_DIR="$TLS_DIR/rabbitmq"

TLS_FERRETDB_PORT="${TLS_FERRETDB_PORT:-27019}"
TLS_FERRETDB_DIR="$TLS_DIR/ferretdb"
TLS_FERRETDB_PIDFILE="$TLS_FERRETDB_DIR/ferretdb.pid"
TLS_FERRETDB_LOG="$TLS_LOG_DIR/ferretdb.log"

tls_log() { printf 'tls-deps: %s\n' "$*"; }
tls_die() {
	printf 'tls-deps: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------
# Certificates: a CA and a server certificate it signs, both ECDSA P-256, valid for 7 days.

certs_install() {
	command -v openssl >/dev/null && return 0
	tls_log "installing openssl via apt"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends openssl </dev/null >>"$TLS_LOG_DIR/apt.log" 2>&1 || {
		as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null >>"$TLS_LOG_DIR/apt.log" 2>&1
		as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends openssl </dev/null >>"$TLS_LOG_DIR/apt.log" 2>&1
	} || tls_die "apt-get install openssl failed (log: $TLS_LOG_DIR/apt.log)"
}

certs_make() {
	certs_install
	local tmp="$CERT_DIR.tmp" log="$TLS_LOG_DIR/openssl.log"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	{
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
			-subj "/CN=chat TLS test CA $(date -u +%Y%m%dT%H%M%SZ)" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
			-keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
			openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
				-subj "/CN=localhost" -keyout "$tmp/server.key" -out "$tmp/server.csr" &&
			printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
				extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >"$tmp/server.ext" &&
			openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
				-CAcreateserial -days 7 -extfile "$tmp/server.ext" -out "$tmp/server.pem"
	} >"$log" 2>&1 || { tail -n 20 "$log" >&2; tls_die "openssl could not make the certificates"; }
	# The CA's key is not needed once the server certificate is signed.
	rm -f "$tmp/ca.key" "$tmp/ca.srl" "$tmp/server.csr" "$tmp/server.ext"
	# The rabbitmq user reads the server key; nobody else needs to.
	chmod 700 "$tmp"
	chmod 600 "$tmp/server.key"
	if id rabbitmq >/dev/null 2>&1; then
		as_root chown -R rabbitmq:rabbitmq "$tmp"
	fi
	chmod 711 "$tmp"
	chmod 644 "$tmp/ca.pem" "$tmp/server.pem"
	rm -rf "$CERT_DIR"
	mv "$tmp" "$CERT_DIR"
	tls_log "certificates: made a CA and a server certificate for localhost and 127.0.0.1 in $CERT_DIR"
}

certs_present() { [[ -s $CERT_DIR/ca.pem && -s $CERT_DIR/server.pem && -s $CERT_DIR/server.key ]]; }

# ---------------------------------------------------------------------------------------------
# RabbitMQ: another node of the Debian package, TLS listener only. Its wrapper switches to the
# rabbitmq user and keeps the environment, so names, ports and directories are RABBITMQ_*
# variables (through `env`, so that sudo's env_reset cannot drop them).

rabbitmq_vars() {
	rabbitmq_node_vars "$TLS_RABBITMQ_DIR" "$TLS_RABBITMQ_NODENAME" "$TLS_RABBITMQ_DIST_PORT"
}

tls_rabbitmq() {
	local vars
	mapfile -t vars < <(rabbitmq_vars)
	as_root env "${vars[@]}" "$@" </dev/null
}

rabbitmq_prepare() {
	local dir=$TLS_RABBITMQ_DIR
	rm -rf "$dir/mnesia"
	mkdir -p "$dir/mnesia" "$dir/log" "$TLS_LOG_DIR"
	echo '[].' >"$dir/enabled_plugins"
	cat >"$dir/rabbitmq.conf" <<-EOF
		# Written by scripts/tls-deps.sh: the TLS tests' own node, AMQPS only.
		listeners.tcp = none
		listeners.ssl.default = $TLS_HOST:$TLS_RABBITMQ_PORT
		ssl_options.cacertfile = $CERT_DIR/ca.pem
		ssl_options.certfile = $CERT_DIR/server.pem
		ssl_options.keyfile = $CERT_DIR/server.key
		ssl_options.verify = verify_none
		ssl_options.fail_if_no_peer_cert = false
		log.file.level = warning
	EOF
	echo '[].' >"$dir/advanced.config"
	: >"$dir/rabbitmq-env.conf"
	if id rabbitmq >/dev/null 2>&1; then
		as_root chown -R rabbitmq:rabbitmq "$dir"
	fi
}

tls_rabbitmq_log_tail() {
	local f
	for f in "$TLS_LOG_DIR/rabbitmq-start.log" "$TLS_RABBITMQ_DIR"/log/*.log; do
		[[ -s $f ]] || continue
		printf -- '--- tail of %s ---\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# rabbitmq_node_pids: pids of the Erlang VMs running our node name, whichever checkout started
# them (the name is in the VM's environment, not its command line).
rabbitmq_node_pids() {
	local exe pid
	for exe in /proc/[0-9]*/exe; do
		[[ "$(readlink "$exe" 2>/dev/null)" == */beam.smp ]] || continue
		pid="${exe#/proc/}"
		pid="${pid%/exe}"
		tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "RABBITMQ_NODENAME=$TLS_RABBITMQ_NODENAME" || continue
		echo "$pid"
	done
}

# env_of PID NAME: the value of NAME in process PID's environment.
env_of() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n "s|^$2=||p" | head -n 1; }

# tls_rabbitmq_pid: the pid of our node (its data directory is this checkout's) while it runs.
tls_rabbitmq_pid() {
	local pid
	for pid in $(rabbitmq_node_pids); do
		if [[ "$(env_of "$pid" RABBITMQ_MNESIA_BASE)" == "$TLS_RABBITMQ_DIR/mnesia" ]]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

# rabbitmq_replace_stale: a node of our name started by a checkout whose directory is gone
# answers with certificates nobody has any more: it is stopped. One of a checkout that still
# exists is left alone, and is an error.
rabbitmq_replace_stale() {
	local pid base
	for pid in $(rabbitmq_node_pids); do
		base="$(env_of "$pid" RABBITMQ_MNESIA_BASE)"
		[[ $base == "$TLS_RABBITMQ_DIR/mnesia" ]] && continue
		if [[ -n $base && -d $base ]]; then
			tls_die "rabbitmq: $TLS_RABBITMQ_NODENAME (pid $pid) runs for another checkout ($base); stop it with its scripts/tls-deps.sh stop, or set TLS_RABBITMQ_NODENAME and the ports"
		fi
		tls_log "rabbitmq: $TLS_RABBITMQ_NODENAME (pid $pid) serves a deleted directory ($base); stopping it"
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 15))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	done
}

tls_rabbitmq_start() {
	local started=$SECONDS
	rabbitmq_replace_stale
	if tls_rabbitmq_pid >/dev/null; then
		wait_port "$TLS_HOST" "$TLS_RABBITMQ_PORT" "$RABBITMQ_START_TIMEOUT" ||
			tls_die "rabbitmq: $TLS_RABBITMQ_NODENAME runs but $TLS_HOST:$TLS_RABBITMQ_PORT does not answer"
		tls_log "rabbitmq: already running on $TLS_HOST:$TLS_RABBITMQ_PORT"
		return 0
	fi
	port_open "$TLS_HOST" "$TLS_RABBITMQ_PORT" &&
		tls_die "rabbitmq: $TLS_HOST:$TLS_RABBITMQ_PORT answers but not from $TLS_RABBITMQ_NODENAME; set TLS_RABBITMQ_PORT"
	rabbitmq_install
	rabbitmq_prepare
	tls_rabbitmq rabbitmq-server -detached >>"$TLS_LOG_DIR/rabbitmq-start.log" 2>&1 9>&- ||
		{ tls_rabbitmq_log_tail; tls_die "rabbitmq-server -detached failed"; }
	if ! wait_port "$TLS_HOST" "$TLS_RABBITMQ_PORT" "$RABBITMQ_START_TIMEOUT"; then
		tls_rabbitmq_log_tail
		tls_die "rabbitmq: $TLS_HOST:$TLS_RABBITMQ_PORT did not answer within ${RABBITMQ_START_TIMEOUT}s"
	fi
	tls_log "rabbitmq: $TLS_RABBITMQ_NODENAME started, AMQPS on $TLS_HOST:$TLS_RABBITMQ_PORT (took $((SECONDS - started))s)"
}

tls_rabbitmq_stop() {
	local pid
	if ! pid="$(tls_rabbitmq_pid)"; then
		tls_log "rabbitmq: $TLS_RABBITMQ_NODENAME already stopped"
		return 0
	fi
	# `shutdown` returns once the Erlang VM has exited.
	tls_rabbitmq rabbitmqctl -q shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		((SECONDS < deadline)) || tls_die "rabbitmq: pid $pid still runs after rabbitmqctl shutdown"
		sleep 0.2
	done
	tls_log "rabbitmq: $TLS_RABBITMQ_NODENAME stopped"
}

# ---------------------------------------------------------------------------------------------
# FerretDB: the binary scripts/deps.sh builds, with a TLS listener only.

# ferretdb_tls_pids: pids of FerretDBs listening for TLS on our address, whichever binary.
ferretdb_tls_pids() {
	local cmdline pid
	for cmdline in /proc/[0-9]*/cmdline; do
		pid="${cmdline#/proc/}"
		pid="${pid%/cmdline}"
		[[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */ferretdb* ]] || continue
		tr '\0' '\n' <"$cmdline" 2>/dev/null | grep -qx -- "--listen-tls=$TLS_HOST:$TLS_FERRETDB_PORT" || continue
		echo "$pid"
	done
}

# ferretdb_data_of PID: the SQLite directory FerretDB PID serves.
ferretdb_data_of() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | sed -n 's|^--sqlite-url=file:||p'; }

tls_ferretdb_pid() {
	local pid
	for pid in $(ferretdb_tls_pids); do
		if [[ "$(ferretdb_data_of "$pid")" == "$TLS_FERRETDB_DIR/data/" ]]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

ferretdb_replace_stale() {
	local pid dir
	for pid in $(ferretdb_tls_pids); do
		dir="$(ferretdb_data_of "$pid")"
		[[ $dir == "$TLS_FERRETDB_DIR/data/" ]] && continue
		if [[ -n $dir && -d $dir ]]; then
			tls_die "ferretdb: the one on $TLS_HOST:$TLS_FERRETDB_PORT (pid $pid) runs for another checkout ($dir); stop it with its scripts/tls-deps.sh stop, or set TLS_FERRETDB_PORT"
		fi
		tls_log "ferretdb: the one on $TLS_HOST:$TLS_FERRETDB_PORT (pid $pid) serves a deleted directory; stopping it"
		stop_pid "$pid"
	done
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	local deadline=$((SECONDS + 10))
	while kill -0 "$1" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$1" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
}

tls_ferretdb_start() {
	ferretdb_replace_stale
	if tls_ferretdb_pid >/dev/null && port_open "$TLS_HOST" "$TLS_FERRETDB_PORT"; then
		tls_log "ferretdb: already running on $TLS_HOST:$TLS_FERRETDB_PORT"
		return 0
	fi
	port_open "$TLS_HOST" "$TLS_FERRETDB_PORT" &&
		tls_die "ferretdb: $TLS_HOST:$TLS_FERRETDB_PORT answers but not from our FerretDB; set TLS_FERRETDB_PORT"
	ferretdb_install
	rm -rf "$TLS_FERRETDB_DIR/data"
	mkdir -p "$TLS_FERRETDB_DIR/data" "$TLS_FERRETDB_DIR/state" "$TLS_LOG_DIR"
	local started=$SECONDS pid
	setsid nohup "$FERRETDB_BIN" \
		--handler=sqlite \
		--sqlite-url="file:$TLS_FERRETDB_DIR/data/" \
		--listen-addr= \
		--listen-tls="$TLS_HOST:$TLS_FERRETDB_PORT" \
		--listen-tls-cert-file="$CERT_DIR/server.pem" \
		--listen-tls-key-file="$CERT_DIR/server.key" \
		--telemetry=disable \
		--state-dir="$TLS_FERRETDB_DIR/state" \
		--debug-addr=- \
		</dev/null >>"$TLS_FERRETDB_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$TLS_FERRETDB_PIDFILE"
	local deadline=$((SECONDS + FERRETDB_START_TIMEOUT))
	until port_open "$TLS_HOST" "$TLS_FERRETDB_PORT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 25 "$TLS_FERRETDB_LOG" >&2 || true
			rm -f "$TLS_FERRETDB_PIDFILE"
			tls_die "ferretdb: exited during start-up"
		fi
		((SECONDS < deadline)) ||
			tls_die "ferretdb: $TLS_HOST:$TLS_FERRETDB_PORT did not answer within ${FERRETDB_START_TIMEOUT}s"
		sleep 0.1
	done
	tls_log "ferretdb: started, TLS on $TLS_HOST:$TLS_FERRETDB_PORT (pid $pid, took $((SECONDS - started))s)"
}

tls_ferretdb_stop() {
	local pid
	rm -f "$TLS_FERRETDB_PIDFILE"
	if ! pid="$(tls_ferretdb_pid)"; then
		tls_log "ferretdb: already stopped"
		return 0
	fi
	stop_pid "$pid"
	tls_log "ferretdb: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------------------------

tls_start() {
	mkdir -p "$TLS_LOG_DIR"
	rabbitmq_replace_stale
	ferretdb_replace_stale
	# Both servers use the certificates: they are made anew only while neither runs.
	if ! certs_present || { ! tls_rabbitmq_pid >/dev/null && ! tls_ferretdb_pid >/dev/null; }; then
		tls_rabbitmq_stop
		tls_ferretdb_stop
		certs_make
	fi
	tls_rabbitmq_start
	tls_ferretdb_start
}

tls_stop() {
	tls_rabbitmq_stop
	tls_ferretdb_stop
}

status() {
	local name=$1 port=$2
	if port_open "$TLS_HOST" "$port"; then
		tls_log "$name: running on $TLS_HOST:$port"
	else
		tls_log "$name: not running ($TLS_HOST:$port does not answer)"
	fi
}

usage() { sed -n '2,28s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

OWNERS_DIR="$TLS_DIR/owners"
LOCK_FILE="$TLS_DIR/deps.lock"

command=${1:-start}
if [[ $command == _watch ]]; then
	owners_watch "$OWNERS_DIR" "${2:?pid}" "$LOCK_FILE" tls_stop
	exit 0
fi

mkdir -p "$TLS_DIR" "$LOG_DIR"
exec 9>"$LOCK_FILE"
flock -w 600 9 || tls_die "timed out waiting for $LOCK_FILE"

case "$command" in
up | start) tls_start ;;
stop | down) tls_stop ;;
status)
	status rabbitmq "$TLS_RABBITMQ_PORT"
	status ferretdb "$TLS_FERRETDB_PORT"
	;;
ca) echo "$CERT_DIR/ca.pem" ;;
stop-when-gone)
	mkdir -p "$TLS_LOG_DIR"
	owners_add "$OWNERS_DIR" "${2:?usage: stop-when-gone PID}" "${BASH_SOURCE[0]}" "$TLS_LOG_DIR/watch.log" &&
		tls_log "stopping both once process $2 has exited"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac

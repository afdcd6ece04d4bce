# shellcheck shell=bash
# Shared helpers for the local dependencies (RabbitMQ and FerretDB). Sourced by scripts/deps.sh
# and by anything else (fault tests) that needs to stop or start a dependency:
#
#   source scripts/lib.sh
#   rabbitmq_stop; rabbitmq_start
#   ferretdb_stop; ferretdb_start
#
# Everything here is idempotent: starting a running service or stopping a stopped one is a no-op.
# Only bash built-ins and coreutils/util-linux are used for checks (port probes go through
# bash's /dev/tcp), so this works on a fresh Debian machine before anything is installed.

REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LOCAL_DIR="$REPO_ROOT/.local"
LOG_DIR="$LOCAL_DIR/log"

RABBITMQ_HOST="${RABBITMQ_HOST:-127.0.0.1}"
RABBITMQ_PORT="${RABBITMQ_PORT:-5672}"
# The management UI (port 15672) is handy for debugging and costs one offline command.
RABBITMQ_MANAGEMENT="${RABBITMQ_MANAGEMENT:-1}"
RABBITMQ_MANAGEMENT_PORT="${RABBITMQ_MANAGEMENT_PORT:-15672}"
# The node's config file (listeners on 127.0.0.1 only), written before every start.
RABBITMQ_CONF="$LOCAL_DIR/rabbitmq/rabbitmq.conf"
# The services' broker passwords, generated once per installation (mode 0600).
BROKER_ENV="$LOCAL_DIR/broker.env"
BROKER_PROVISION="$REPO_ROOT/deploy/rabbitmq/provision.sh"
RABBITMQ_START_TIMEOUT="${RABBITMQ_START_TIMEOUT:-60}"

FERRETDB_BIN="$LOCAL_DIR/bin/ferretdb"
FERRETDB_HOST="${FERRETDB_HOST:-127.0.0.1}"
FERRETDB_PORT="${FERRETDB_PORT:-27017}"
FERRETDB_DIR="$LOCAL_DIR/ferretdb"
FERRETDB_PIDFILE="$FERRETDB_DIR/ferretdb.pid"
FERRETDB_LOG="$LOG_DIR/ferretdb.log"
# FerretDB's metrics/pprof listener defaults to 127.0.0.1:8088, a port our own services might
# want; "-" turns it off.
FERRETDB_DEBUG_ADDR="${FERRETDB_DEBUG_ADDR:--}"
FERRETDB_START_TIMEOUT="${FERRETDB_START_TIMEOUT:-30}"

case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) PATH="$PATH:/usr/local/go/bin" ;; esac
# rabbitmq-server, rabbitmqctl and rabbitmq-plugins live in /usr/sbin.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
export PATH

deps_log() { printf 'deps: %s\n' "$*"; }
deps_die() {
	printf 'deps: error: %s\n' "$*" >&2
	exit 1
}

# as_root CMD...: runs CMD as root (directly when we already are root). fd 9 (the lock held by
# scripts/deps.sh) is closed so daemons started underneath (rabbitmq, apt's postinst) cannot
# inherit it and keep the lock forever.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@" 9>&-
	elif command -v sudo >/dev/null; then
		sudo -n "$@" 9>&-
	else
		deps_die "need root to run: $*"
	fi
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
	# shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_port HOST PORT SECONDS: polls until the port answers; false on timeout.
wait_port() {
	local deadline=$((SECONDS + $3))
	until port_open "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# wait_port_closed HOST PORT SECONDS: polls until the port stops answering; false on timeout.
wait_port_closed() {
	local deadline=$((SECONDS + $3))
	while port_open "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ (Debian package, runs as the rabbitmq user, node rabbit@$(hostname -s))

rabbitmq_install() {
	command -v rabbitmq-server >/dev/null && return 0
	deps_log "installing rabbitmq-server via apt"
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
		install --no-install-recommends rabbitmq-server)
	# Only refresh the package lists when the install cannot work with the ones we have.
	if ! as_root "${apt[@]}" </dev/null >"$LOG_DIR/apt-rabbitmq.log" 2>&1; then
		deps_log "apt-get install failed with the current package lists; running apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null >>"$LOG_DIR/apt-rabbitmq.log" 2>&1 ||
			{ tail -n 20 "$LOG_DIR/apt-rabbitmq.log" >&2; deps_die "apt-get update failed"; }
		as_root "${apt[@]}" </dev/null >>"$LOG_DIR/apt-rabbitmq.log" 2>&1 ||
			{ tail -n 20 "$LOG_DIR/apt-rabbitmq.log" >&2; deps_die "apt-get install rabbitmq-server failed"; }
	fi
	command -v rabbitmq-server >/dev/null || deps_die "rabbitmq-server still missing after apt-get install"
}

# rabbitmqctl as root talks to the node with root's Erlang cookie; the node uses the rabbitmq
# user's. Keep them equal so `rabbitmqctl` works from any shell (Debian's wrapper usually
# switches to the rabbitmq user anyway, this covers the case where it does not).
rabbitmq_sync_cookie() {
	local src=/var/lib/rabbitmq/.erlang.cookie dst="${HOME:-/root}/.erlang.cookie"
	[[ $EUID -eq 0 && -r $src ]] || return 0
	if ! cmp -s "$src" "$dst" 2>/dev/null; then
		install -m 400 "$src" "$dst"
	fi
}

rabbitmq_enable_management() {
	[[ $RABBITMQ_MANAGEMENT == 1 ]] || return 0
	grep -qs rabbitmq_management /etc/rabbitmq/enabled_plugins && return 0
	as_root rabbitmq-plugins enable --offline rabbitmq_management </dev/null >>"$LOG_DIR/rabbitmq-start.log" 2>&1 ||
		deps_log "warning: could not enable rabbitmq_management (continuing without it)"
}

# rabbitmq_write_config: the node's config file. AMQP listens on $RABBITMQ_HOST only and the
# management UI on 127.0.0.1 only, so neither is reachable from another machine. The rabbitmq
# user reads it, so it holds nothing secret.
rabbitmq_write_config() {
	mkdir -p "$(dirname "$RABBITMQ_CONF")"
	cat >"$RABBITMQ_CONF.tmp" <<-EOF
		# Written by scripts/deps.sh before it starts the node; edits are overwritten.
		listeners.tcp.default = $RABBITMQ_HOST:$RABBITMQ_PORT
		management.tcp.ip = 127.0.0.1
		management.tcp.port = $RABBITMQ_MANAGEMENT_PORT
	EOF
	chmod 644 "$RABBITMQ_CONF.tmp"
	mv -f "$RABBITMQ_CONF.tmp" "$RABBITMQ_CONF"
}

# listens_beyond_loopback PORT: true when something listens on PORT at an address other than
# 127.0.0.1 or ::1 (read from /proc/net/tcp and tcp6).
listens_beyond_loopback() {
	local port_hex file _sl local_addr _rem state _rest
	printf -v port_hex '%04X' "$1"
	for file in /proc/net/tcp /proc/net/tcp6; do
		[[ -r $file ]] || continue
		while read -r _sl local_addr _rem state _rest; do
			[[ $state == 0A && ${local_addr##*:} == "$port_hex" ]] || continue
			case ${local_addr%:*} in
			0100007F | 00000000000000000000000001000000 | 0000000000000000FFFF00000100007F) ;;
			*) return 0 ;;
			esac
		done <"$file"
	done
	return 1
}

# rabbitmq_check_listeners: warns when a running node was started without our config file.
rabbitmq_check_listeners() {
	local port
	for port in "$RABBITMQ_PORT" "$RABBITMQ_MANAGEMENT_PORT"; do
		if listens_beyond_loopback "$port"; then
			deps_log "rabbitmq: warning: port $port listens on more than 127.0.0.1 (the node was started without $RABBITMQ_CONF); \`scripts/deps.sh restart-rabbitmq\` applies it"
		fi
	done
}

# rabbitmq_users: creates or updates the services' broker users (chat-auth, chat-gateway,
# chat-history) with the permissions of deploy/rabbitmq/permissions.conf. Their passwords are
# generated into $BROKER_ENV on the first run and kept; scripts/run-local.sh reads them.
rabbitmq_users() {
	if [[ ! -s $BROKER_ENV ]]; then
		local role random
		(
			umask 077
			{
				echo "# RabbitMQ passwords of the local services' users (scripts/deps.sh generated them once;"
				echo "# scripts/run-local.sh reads them). Delete this file and run scripts/deps.sh for new ones."
				for role in AUTH GATEWAY HISTORY; do
					# 1 KiB of random bytes holds about 240 letters and digits; 32 are kept.
					random="$(head -c 1024 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')"
					((${#random} >= 32)) || deps_die "could not read random bytes for a password"
					echo "RABBITMQ_${role}_PASSWORD=${random:0:32}"
				done
			} >"$BROKER_ENV.tmp"
			mv -f "$BROKER_ENV.tmp" "$BROKER_ENV"
		)
		deps_log "rabbitmq: generated the services' broker passwords into $BROKER_ENV"
	fi
	as_root bash "$BROKER_PROVISION" apply --passwords "$BROKER_ENV" </dev/null | sed 's/^provision: /deps: rabbitmq: /' ||
		deps_die "rabbitmq: could not create the services' users (deploy/rabbitmq/provision.sh)"
}

rabbitmq_log_tail() {
	local f
	for f in "$LOG_DIR/rabbitmq-start.log" /var/log/rabbitmq/rabbit@*.log; do
		[[ -s $f ]] || continue
		printf -- '--- tail of %s ---\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# rabbitmq_start: installs if needed, starts the node unless the AMQP port already answers,
# and waits until it does. Prints one status line.
rabbitmq_start() {
	local started=""
	mkdir -p "$LOG_DIR"
	if port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
		rabbitmq_sync_cookie
		deps_log "rabbitmq: already running on $RABBITMQ_HOST:$RABBITMQ_PORT"
		rabbitmq_check_listeners
		return 0
	fi
	rabbitmq_install
	rabbitmq_sync_cookie
	# apt's postinst may have launched the node already (or it may still be booting).
	if ! port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
		if as_root rabbitmqctl -q ping </dev/null >/dev/null 2>&1; then
			deps_log "rabbitmq: node is up but port $RABBITMQ_PORT is not answering yet; waiting"
		else
			rabbitmq_enable_management
			rabbitmq_write_config
			started=$SECONDS
			# -detached makes the Erlang VM fork into the background and outlive this script.
			# The wrapper switches to the rabbitmq user and keeps the environment; `env` keeps
			# sudo's env_reset from dropping the config file's name.
			as_root env RABBITMQ_CONFIG_FILE="$RABBITMQ_CONF" rabbitmq-server -detached </dev/null >>"$LOG_DIR/rabbitmq-start.log" 2>&1 ||
				{ rabbitmq_log_tail; deps_die "rabbitmq-server -detached failed"; }
		fi
	fi
	if ! wait_port "$RABBITMQ_HOST" "$RABBITMQ_PORT" "$RABBITMQ_START_TIMEOUT"; then
		rabbitmq_log_tail
		deps_die "rabbitmq: port $RABBITMQ_HOST:$RABBITMQ_PORT did not answer within ${RABBITMQ_START_TIMEOUT}s"
	fi
	rabbitmq_sync_cookie
	deps_log "rabbitmq: started on $RABBITMQ_HOST:$RABBITMQ_PORT${started:+ (took $((SECONDS - started))s)}"
	[[ -n $started ]] || rabbitmq_check_listeners
}

# rabbitmq_node_vars DIR NODENAME DIST_PORT [IP PORT]: the RABBITMQ_* variables, one a line for
# `env`, of another node of the Debian package with its own name, distribution port and
# directory DIR (data, logs, pid file, plugin list, config and env files), for the scripts that
# run nodes of their own. IP and PORT set its AMQP listener; without them, its config file's
# listeners apply.
rabbitmq_node_vars() {
	local dir=$1
	printf '%s\n' "RABBITMQ_NODENAME=$2" "RABBITMQ_DIST_PORT=$3"
	if [[ -n ${4:-} ]]; then
		printf '%s\n' "RABBITMQ_NODE_IP_ADDRESS=$4" "RABBITMQ_NODE_PORT=$5"
	fi
	printf '%s\n' \
		"RABBITMQ_MNESIA_BASE=$dir/mnesia" \
		"RABBITMQ_LOG_BASE=$dir/log" \
		"RABBITMQ_PID_FILE=$dir/rabbitmq.pid" \
		"RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins" \
		"RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf" \
		"RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config" \
		"RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf"
}

# rabbitmq_stop: stops the node (and waits for the VM to exit). epmd is left running; it is harmless.
rabbitmq_stop() {
	if ! command -v rabbitmqctl >/dev/null; then
		deps_log "rabbitmq: not installed"
		return 0
	fi
	rabbitmq_sync_cookie
	if ! as_root rabbitmqctl -q ping </dev/null >/dev/null 2>&1 && ! port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
		deps_log "rabbitmq: already stopped"
		return 0
	fi
	# `shutdown` (unlike `stop`) blocks until the Erlang VM has exited.
	as_root rabbitmqctl -q shutdown </dev/null >/dev/null 2>&1 || as_root rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || true
	wait_port_closed "$RABBITMQ_HOST" "$RABBITMQ_PORT" 30 ||
		deps_die "rabbitmq: port $RABBITMQ_PORT still answers after rabbitmqctl shutdown"
	deps_log "rabbitmq: stopped"
}

# ---------------------------------------------------------------------------------------------
# FerretDB (Mongo wire protocol on SQLite; binary built from tools/ferretdb)

ferretdb_install() {
	[[ -x $FERRETDB_BIN ]] && return 0
	deps_log "building FerretDB into $FERRETDB_BIN (takes a couple of minutes the first time)"
	mkdir -p "$LOG_DIR"
	bash "$REPO_ROOT/tools/ferretdb/build.sh" "$FERRETDB_BIN" </dev/null >"$LOG_DIR/ferretdb-build.log" 2>&1 ||
		{ tail -n 30 "$LOG_DIR/ferretdb-build.log" >&2; deps_die "FerretDB build failed (full log: $LOG_DIR/ferretdb-build.log)"; }
}

# ferretdb_pids: pids of running processes whose executable is our FerretDB binary.
ferretdb_pids() {
	local pid exe
	{
		if [[ -s $FERRETDB_PIDFILE ]]; then
			pid="$(<"$FERRETDB_PIDFILE")"
			[[ $pid =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$FERRETDB_BIN"* ]] && echo "$pid"
		fi
		# Also catch an instance started without the pid file (e.g. by hand), but only ours.
		for exe in /proc/[0-9]*/exe; do
			[[ "$(readlink "$exe" 2>/dev/null)" == "$FERRETDB_BIN"* ]] || continue
			pid="${exe#/proc/}"
			echo "${pid%/exe}"
		done
	} | sort -un
}

# ferretdb_orphan: prints the pid of a FerretDB listening on our address whose executable or
# SQLite directory was deleted (a removed checkout's), and succeeds; fails when there is none.
ferretdb_orphan() {
	local cmdline pid exe dir
	for cmdline in /proc/[0-9]*/cmdline; do
		pid="${cmdline#/proc/}"
		pid="${pid%/cmdline}"
		exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
		[[ $exe == */ferretdb* ]] || continue
		tr '\0' '\n' <"$cmdline" 2>/dev/null | grep -qx -- "--listen-addr=$FERRETDB_HOST:$FERRETDB_PORT" || continue
		dir="$(tr '\0' '\n' <"$cmdline" 2>/dev/null | sed -n 's|^--sqlite-url=file:||p')"
		if [[ $exe == *' (deleted)' || (-n $dir && ! -d $dir) ]]; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

ferretdb_log_tail() {
	[[ -s $FERRETDB_LOG ]] || return 0
	printf -- '--- tail of %s ---\n' "$FERRETDB_LOG" >&2
	tail -n 25 "$FERRETDB_LOG" >&2
}

# ferretdb_start: builds if needed, starts FerretDB detached unless its port already answers,
# and waits until it does. Prints one status line.
ferretdb_start() {
	local orphan
	if orphan="$(ferretdb_orphan)"; then
		# A FerretDB whose checkout was deleted still answers, from files nobody can see: its
		# data is gone at its next restart. Replaced by ours.
		deps_log "ferretdb: the one on $FERRETDB_HOST:$FERRETDB_PORT (pid $orphan) serves a deleted directory; restarting it"
		kill "$orphan" 2>/dev/null || true
		local deadline=$((SECONDS + 10))
		while port_open "$FERRETDB_HOST" "$FERRETDB_PORT" && ((SECONDS < deadline)); do sleep 0.2; done
		kill -9 "$orphan" 2>/dev/null || true
	fi
	if port_open "$FERRETDB_HOST" "$FERRETDB_PORT"; then
		deps_log "ferretdb: already running on $FERRETDB_HOST:$FERRETDB_PORT"
		return 0
	fi
	ferretdb_install
	mkdir -p "$FERRETDB_DIR/data" "$FERRETDB_DIR/state" "$LOG_DIR"
	local started=$SECONDS pid
	# setsid + nohup: own session, immune to the caller's hangup, so it outlives this script.
	setsid nohup "$FERRETDB_BIN" \
		--handler=sqlite \
		--sqlite-url="file:$FERRETDB_DIR/data/" \
		--listen-addr="$FERRETDB_HOST:$FERRETDB_PORT" \
		--telemetry=disable \
		--state-dir="$FERRETDB_DIR/state" \
		--debug-addr="$FERRETDB_DEBUG_ADDR" \
		</dev/null >>"$FERRETDB_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$FERRETDB_PIDFILE"
	local deadline=$((SECONDS + FERRETDB_START_TIMEOUT))
	until port_open "$FERRETDB_HOST" "$FERRETDB_PORT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			ferretdb_log_tail
			rm -f "$FERRETDB_PIDFILE"
			deps_die "ferretdb: exited during start-up"
		fi
		if ((SECONDS >= deadline)); then
			ferretdb_log_tail
			deps_die "ferretdb: port $FERRETDB_HOST:$FERRETDB_PORT did not answer within ${FERRETDB_START_TIMEOUT}s (pid $pid)"
		fi
		sleep 0.2
	done
	deps_log "ferretdb: started on $FERRETDB_HOST:$FERRETDB_PORT (pid $pid, took $((SECONDS - started))s, log $FERRETDB_LOG)"
}

# ferretdb_stop: stops our FerretDB (SIGTERM, then SIGKILL after 10s). Data is kept.
ferretdb_stop() {
	local pids pid
	pids="$(ferretdb_pids)"
	if [[ -z $pids ]]; then
		rm -f "$FERRETDB_PIDFILE"
		if port_open "$FERRETDB_HOST" "$FERRETDB_PORT"; then
			deps_die "ferretdb: port $FERRETDB_PORT answers but not from $FERRETDB_BIN; not touching it"
		fi
		deps_log "ferretdb: already stopped"
		return 0
	fi
	for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
	local deadline=$((SECONDS + 10))
	for pid in $pids; do
		while kill -0 "$pid" 2>/dev/null; do
			if ((SECONDS >= deadline)); then
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
	done
	rm -f "$FERRETDB_PIDFILE"
	wait_port_closed "$FERRETDB_HOST" "$FERRETDB_PORT" 10 ||
		deps_die "ferretdb: port $FERRETDB_PORT still answers after stopping pid(s) $pids"
	deps_log "ferretdb: stopped (pid ${pids//$'\n'/ })"
}

# ---------------------------------------------------------------------------------------------
# Owners: processes (test runs) a script's servers are kept for, one empty file per pid in an
# owners directory. The servers are stopped once every owner has exited.

# owners_live DIR: prints the registered pids that are still running; forgets the others.
owners_live() {
	local f pid
	for f in "$1"/*; do
		[[ -e $f ]] || continue
		pid="${f##*/}"
		if kill -0 "$pid" 2>/dev/null; then
			echo "$pid"
		else
			rm -f "$f"
		fi
	done
}

# owners_add DIR PID SCRIPT LOG: registers PID and leaves a detached `bash SCRIPT _watch PID`
# (output appended to LOG), which is to call owners_watch. Fails when PID does not run.
owners_add() {
	local dir=$1 pid=$2 script=$3 log=$4
	if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
		deps_die "no running process $pid"
	fi
	mkdir -p "$dir"
	[[ -e $dir/$pid ]] && return 0
	: >"$dir/$pid"
	setsid nohup bash "$script" _watch "$pid" </dev/null >>"$log" 2>&1 9>&- &
}

# owners_watch DIR PID LOCK STOP: waits for PID to exit, then, holding the flock on LOCK, runs
# the command STOP unless another registered owner is still alive.
owners_watch() {
	local dir=$1 pid=$2 lock=$3 stop=$4
	while kill -0 "$pid" 2>/dev/null; do sleep 1; done
	exec 9>"$lock"
	flock -w 120 9 || deps_die "timed out waiting for $lock"
	rm -f "$dir/$pid"
	if [[ -n "$(owners_live "$dir")" ]]; then
		deps_log "process $pid exited; others still use the servers"
		return 0
	fi
	deps_log "process $pid exited; stopping"
	"$stop"
}

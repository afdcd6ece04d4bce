#!/usr/bin/env bash
# Installs (if missing) and starts the local dependencies: RabbitMQ on 127.0.0.1:5672 and
# FerretDB (Mongo wire protocol, SQLite storage under .local/ferretdb) on 127.0.0.1:27017.
# RabbitMQ gets the services' users (deploy/rabbitmq/permissions.conf; passwords generated once
# into .local/broker.env) and listens on 127.0.0.1 only, its management UI too (:15672).
# Safe to run repeatedly and concurrently; services are left running in the background.
#
# Usage:
#   scripts/deps.sh                  install what is missing, start what is not running
#   scripts/deps.sh status           one line per dependency
#   scripts/deps.sh start-rabbitmq | stop-rabbitmq | restart-rabbitmq
#   scripts/deps.sh rabbitmq-users   create or update the services' broker users only
#   scripts/deps.sh start-ferretdb | stop-ferretdb | restart-ferretdb
#
# Tests that need finer control can `source scripts/lib.sh` and call the same functions.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

mkdir -p "$LOG_DIR"
# Serialise concurrent callers (several shells/agents may run this at once): two starters
# racing would launch two FerretDBs or two `rabbitmq-server -detached`.
exec 9>"$LOCAL_DIR/deps.lock"
flock -w 600 9 || deps_die "timed out waiting for $LOCAL_DIR/deps.lock"

status() {
	local name=$1 host=$2 port=$3
	if port_open "$host" "$port"; then
		deps_log "$name: running on $host:$port"
	else
		deps_log "$name: not running ($host:$port does not answer)"
	fi
}

case "${1:-up}" in
up | start)
	rabbitmq_start
	rabbitmq_users
	ferretdb_start
	;;
status)
	status rabbitmq "$RABBITMQ_HOST" "$RABBITMQ_PORT"
	status ferretdb "$FERRETDB_HOST" "$FERRETDB_PORT"
	;;
start-rabbitmq) rabbitmq_start && rabbitmq_users ;;
stop-rabbitmq) rabbitmq_stop ;;
restart-rabbitmq) rabbitmq_stop && rabbitmq_start && rabbitmq_users ;;
rabbitmq-users) rabbitmq_users ;;
start-ferretdb) ferretdb_start ;;
stop-ferretdb) ferretdb_stop ;;
restart-ferretdb) ferretdb_stop && ferretdb_start ;;
-h | --help | help) sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" ;;
*)
	sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac

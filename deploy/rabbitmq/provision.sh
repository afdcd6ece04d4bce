#!/usr/bin/env bash
# Creates or updates the chat services' RabbitMQ users as deploy/rabbitmq/permissions.conf
# describes them: each gets its password, its vhost and topic permissions, and no tags.
# Run by scripts/deps.sh (local set-up), the `rabbitmq-users` service of docker-compose.yml
# and the tests; safe to run again (it updates passwords and permissions in place).
#
# Usage:
#   provision.sh apply [options]        create or update the users, in one definitions import
#   provision.sh definitions [options]  print that definitions document (JSON, passwords
#                                       included) instead, for a broker rabbitmqctl cannot
#                                       reach: import it with the management UI
#                                       ("Import definitions") or `rabbitmqadmin import`
#   provision.sh delete [options]       delete the users
#
# Options:
#   --exchange NAME       the services' topic exchange (default chat.events)
#   --history-queue NAME  history-service's queue (default chat.history)
#   --vhost VHOST         the virtual host (default /)
#   --prefix PREFIX       user names are PREFIX<role> (default chat-: chat-auth, chat-gateway,
#                         chat-history)
#   --passwords FILE      read the passwords from FILE (KEY=value lines) instead of the
#                         environment
#   --node NODE           the node rabbitmqctl talks to (rabbitmqctl's default otherwise)
#
# Passwords: RABBITMQ_AUTH_PASSWORD, RABBITMQ_GATEWAY_PASSWORD and RABBITMQ_HISTORY_PASSWORD
# (RABBITMQ_<ROLE>_PASSWORD), at least 12 characters of letters, digits and `-._~`, since
# they are placed in amqp:// URIs unescaped. They never appear on a command line: the
# definitions reach rabbitmqctl on its standard input.
#
# What it does not do: remove permissions the spec no longer lists for other exchanges or
# vhosts, or touch any other user (the administrator, guest).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
spec="$here/permissions.conf"

die() {
	printf 'provision: error: %s\n' "$*" >&2
	exit 2
}
usage() {
	sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

action="${1:-}"
[[ $action == apply || $action == definitions || $action == delete ]] || usage
shift

exchange=chat.events
history_queue=chat.history
vhost=/
prefix=chat-
passwords_file=""
node=()
while (($#)); do
	(($# >= 2)) || die "$1 needs a value"
	case $1 in
	--exchange) exchange=$2 ;;
	--history-queue) history_queue=$2 ;;
	--vhost) vhost=$2 ;;
	--prefix) prefix=$2 ;;
	--passwords) passwords_file=$2 ;;
	--node) node=(--node "$2") ;;
	*) die "unknown option $1" ;;
	esac
	shift 2
done

# Names go into regexes (escaped below) and JSON: keep them to plain characters.
name_ok='^[A-Za-z0-9_.-]+$'
[[ $exchange =~ $name_ok ]] || die "exchange name '$exchange': letters, digits and _.- only"
[[ $history_queue =~ $name_ok ]] || die "queue name '$history_queue': letters, digits and _.- only"
[[ $vhost =~ ^[A-Za-z0-9_./-]+$ ]] || die "vhost '$vhost': letters, digits and _./- only"
[[ -z $prefix || $prefix =~ $name_ok ]] || die "prefix '$prefix': letters, digits and _.- only"

# literal NAME: NAME as a regex that matches only itself (the names hold no other metacharacter).
literal() { printf '%s' "${1//./\\.}"; }

# fill TEXT: TEXT with {exchange} and {history_queue} replaced by the escaped names.
fill() {
	local text=$1 key value
	for key in exchange history_queue; do
		if [[ $key == exchange ]]; then value="$(literal "$exchange")"; else value="$(literal "$history_queue")"; fi
		while [[ $text == *"{$key}"* ]]; do
			text="${text%%"{$key}"*}${value}${text#*"{$key}"}"
		done
	done
	printf '%s' "$text"
}

# json TEXT: TEXT as a JSON string.
json() {
	local s=$1
	s="${s//\\/\\\\}"
	s="${s//\"/\\\"}"
	printf '"%s"' "$s"
}

declare -A from_file=()
if [[ -n $passwords_file ]]; then
	[[ -r $passwords_file ]] || die "cannot read $passwords_file"
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^(RABBITMQ_[A-Z]+_PASSWORD)=(.*)$ ]] && from_file[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
	done <"$passwords_file"
fi

# password ROLE: the role's password, checked.
password() {
	local var="RABBITMQ_${1^^}_PASSWORD" value
	if [[ -n $passwords_file ]]; then value="${from_file[$var]:-}"; else value="${!var:-}"; fi
	[[ -n $value ]] || die "$var is not set${passwords_file:+ in $passwords_file}"
	((${#value} >= 12)) || die "$var is shorter than 12 characters"
	[[ $value =~ ^[A-Za-z0-9._~-]+$ ]] || die "$var: letters, digits and -._~ only (it goes into a URI unescaped)"
	printf '%s' "$value"
}

roles=()
users=() permissions=() topic_permissions=()
while read -r role configure write read topic_write topic_read extra; do
	[[ -z $role || $role == \#* ]] && continue
	[[ -n $topic_read && -z ${extra:-} ]] || die "$spec: the line of '$role' needs exactly six columns"
	roles+=("$role")
	[[ $action == delete ]] && continue
	user="$(json "$prefix$role")"
	users+=("{\"name\":$user,\"password\":$(json "$(password "$role")"),\"tags\":\"\"}")
	permissions+=("{\"user\":$user,\"vhost\":$(json "$vhost"),\"configure\":$(json "$(fill "$configure")"),\"write\":$(json "$(fill "$write")"),\"read\":$(json "$(fill "$read")")}")
	topic_permissions+=("{\"user\":$user,\"vhost\":$(json "$vhost"),\"exchange\":$(json "$exchange"),\"write\":$(json "$(fill "$topic_write")"),\"read\":$(json "$(fill "$topic_read")")}")
done <"$spec"
((${#roles[@]})) || die "$spec lists no user"

joined() {
	local IFS=,
	printf '%s' "$*"
}

case $action in
definitions | apply)
	document="{\"users\":[$(joined "${users[@]}")],\"permissions\":[$(joined "${permissions[@]}")],\"topic_permissions\":[$(joined "${topic_permissions[@]}")]}"
	if [[ $action == definitions ]]; then
		printf '%s\n' "$document"
		exit 0
	fi
	# The import is one RPC to the node that returns once every definition is applied.
	printf '%s' "$document" | rabbitmqctl "${node[@]}" -q import_definitions --format json >/dev/null ||
		die "rabbitmqctl import_definitions failed"
	printf 'provision: users %s on vhost %s, exchange %s, as deploy/rabbitmq/permissions.conf says\n' \
		"${roles[*]/#/$prefix}" "$vhost" "$exchange"
	;;
delete)
	# One rabbitmqctl per user, side by side; a user that does not exist is no error.
	pids=()
	for role in "${roles[@]}"; do
		rabbitmqctl "${node[@]}" -q delete_user "$prefix$role" >/dev/null 2>&1 &
		pids+=("$!")
	done
	for pid in "${pids[@]}"; do wait "$pid" || true; done
	printf 'provision: deleted users %s (those that existed)\n' "${roles[*]/#/$prefix}"
	;;
esac

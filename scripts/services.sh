#!/usr/bin/env bash
# Make the servers the test suite talks to available on loopback:
#   PostgreSQL 127.0.0.1:5432 (user postgres, trust auth, database pscheduler_test)
#   Redis      127.0.0.1:6379
#   RabbitMQ   127.0.0.1:5672 (guest/guest)
# and the programs the tests execute: redis-server (tests start private ones),
# daemontools (supervise, svc, svscan, svstat, multilog, setuidgid),
# systemd-analyze and /bin/kill (procps), and headless Chromium with its
# WebDriver (chromium, chromium-driver: tests/test_dashboard_browser.py and
# scripts/screenshot). These are installed (apt) whenever
# they are missing, even if a server already answers on its port.
#
#   scripts/services.sh start    detect what runs; install (apt) and start the rest
#   scripts/services.sh stop     stop only the servers that `start` started
#   scripts/services.sh status   show what is up; exit 1 if something is missing
#
# Two kinds of machine are supported:
#   * servers already running on the standard ports: they are detected and left
#     alone (start starts nothing, stop stops nothing);
#   * a fresh Debian 12 as root without a running systemd (CI containers):
#     packages come from apt, servers are started directly, never via systemctl.
# What `start` started (including an epmd that RabbitMQ brought up) is recorded
# in .services/started, so `stop` never touches a server that ran before.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=$ROOT/.services
STATE_FILE=$STATE_DIR/started

REDIS_PORT=6379
AMQP_PORT=5672
PG_PORT=5432
PG_DB=pscheduler_test
# Marks the pg_hba.conf lines we add, so they are added once only.
HBA_MARK='# added by pyramid_scheduler scripts/services.sh: trust loopback for tests'

# Server binaries live in sbin on Debian, which a non-login PATH may lack.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
# C.UTF-8 always exists; LANG may name a locale a fresh machine lacks, which
# makes initdb fail and every Perl tool of postgresql-common warn.
export LC_ALL=C.UTF-8

log() { printf 'services: %s\n' "$*"; }
die() {
	printf 'services: ERROR: %s\n' "$*" >&2
	exit 1
}

# --- helpers -----------------------------------------------------------------

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
	timeout 3 bash -c ": >/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_port NAME PORT SECONDS LOGHINT: fail loudly if the server never listens.
wait_port() {
	local name=$1 port=$2 secs=$3 hint=$4 i
	for ((i = 0; i < secs; i++)); do
		port_open "$port" && return 0
		sleep 1
	done
	die "$name did not come up on 127.0.0.1:$port within ${secs}s (look at $hint)"
}

# Remember a server we started, one per line ("redis", "postgresql 15", ...).
record_started() {
	mkdir -p "$STATE_DIR"
	grep -qxF "$1" "$STATE_FILE" 2>/dev/null || printf '%s\n' "$1" >>"$STATE_FILE"
}

started_list() {
	if [ -s "$STATE_FILE" ]; then paste -sd, "$STATE_FILE"; else echo none; fi
}

started_by_us() {
	grep -q "^$1\b" "$STATE_FILE" 2>/dev/null
}

# Newest installed PostgreSQL server version (e.g. "15"), or fail.
pg_version() {
	local bins
	command -v pg_ctlcluster >/dev/null || return 1
	bins=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null) || return 1
	printf '%s\n' "$bins" | sed 's,^/usr/lib/postgresql/,,; s,/bin/postgres$,,' | sort -V | tail -n 1
}

# --- packages ----------------------------------------------------------------

# Debian packages that bring every program the tests execute, whether or not a
# server already answers on its port: tests start redis-server binaries of
# their own (tests/test_broker_outage.py, tests/test_durability.py), and call
# kill (procps: the systemd unit's ExecReload=/bin/kill), systemd-analyze and
# the daemontools programs, and drive Chromium through chromedriver (the
# dashboard's browser test); ip, nsenter and unshare make the "hosts" of
# tests/test_netns_hosts.py (network namespaces with host names of their
# own). RabbitMQ and PostgreSQL are installed too, so that this machine can
# run the suite on its own. Prints "package:program" pairs
# whose program is missing.
missing_packages() {
	local pair pkgs=()
	for pair in daemontools:supervise daemontools:svscan daemontools:svc \
		daemontools:svstat daemontools:multilog daemontools:setuidgid \
		systemd:systemd-analyze procps:/bin/kill \
		redis-server:redis-server redis-tools:redis-cli \
		rabbitmq-server:rabbitmq-server postgresql-client:psql \
		chromium:chromium chromium-driver:chromedriver \
		iproute2:ip util-linux:nsenter util-linux:unshare; do
		command -v "${pair#*:}" >/dev/null || pkgs+=("${pair%%:*}")
	done
	pg_version >/dev/null || pkgs+=(postgresql)
	printf '%s\n' "${pkgs[@]}" | sort -u | paste -sd' '
}

# Run "$@" with a policy-rc.d that forbids starting services, unless the
# machine already has one (Docker images do). Without it, the packages'
# postinst would start the servers on their default config (RabbitMQ on all
# interfaces, PostgreSQL without trust auth); we start them ourselves instead.
with_services_blocked() {
	local policy=/usr/sbin/policy-rc.d rc=0
	if [ -e "$policy" ]; then
		"$@"
		return
	fi
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	"$@" || rc=$?
	rm -f "$policy"
	return "$rc"
}

apt_install() {
	[ "$(id -u)" = 0 ] || die "need root to install: $* (or install them by hand)"
	command -v apt-get >/dev/null || die "no apt-get here; install by hand: $*"
	log "installing with apt-get: $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null
	with_services_blocked apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# The programs the tests execute; daemontools and systemd-analyze are only
# needed as programs, never run as services.
TOOLS=(supervise svc svscan svstat multilog setuidgid systemd-analyze /bin/kill
	redis-server chromium chromedriver ip nsenter unshare)

check_tools() {
	local tool
	for tool in "${TOOLS[@]}"; do
		command -v "$tool" >/dev/null || die "$tool not found on PATH after install"
	done
}

# --- Redis -------------------------------------------------------------------

start_redis() {
	local dir=$STATE_DIR/redis
	mkdir -p "$dir"
	log "redis: starting on 127.0.0.1:$REDIS_PORT"
	# No persistence: test data is throw-away.
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$dir" \
		--logfile "$dir/redis.log" --pidfile "$dir/redis.pid" </dev/null
	record_started redis
	wait_port redis "$REDIS_PORT" 30 "$dir/redis.log"
}

stop_redis() {
	log "redis: stopping"
	redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave </dev/null >/dev/null 2>&1 || true
	wait_closed redis "$REDIS_PORT"
}

# --- RabbitMQ ----------------------------------------------------------------

# Same environment for the server and rabbitmqctl: listen on loopback only
# (AMQP, Erlang distribution and epmd), and a fixed node name so that a
# container's unresolvable hostname does not matter.
rabbit_env() {
	export RABBITMQ_NODENAME=rabbit@localhost
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT=$AMQP_PORT
	export ERL_EPMD_ADDRESS=127.0.0.1
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

start_rabbitmq() {
	rabbit_env
	# The Erlang VM starts epmd (port 4369) if none runs and leaves it behind
	# after `rabbitmqctl stop`; remember to stop it too if it is ours.
	port_open 4369 || record_started epmd
	log "rabbitmq: starting on 127.0.0.1:$AMQP_PORT (can take a minute)"
	rabbitmq-server -detached </dev/null
	record_started rabbitmq
	# The first boot on a fresh machine is slow; be generous.
	wait_port rabbitmq "$AMQP_PORT" 120 /var/log/rabbitmq/
	rabbitmqctl -q await_startup --timeout 60 </dev/null >/dev/null ||
		die "rabbitmq listens but did not finish booting (look at /var/log/rabbitmq/)"
}

stop_rabbitmq() {
	rabbit_env
	log "rabbitmq: stopping"
	rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || true
	wait_closed rabbitmq "$AMQP_PORT"
}

stop_epmd() {
	log "epmd: stopping"
	epmd -kill </dev/null >/dev/null 2>&1 || true
	wait_closed epmd 4369
}

# --- PostgreSQL --------------------------------------------------------------

# Listen on 127.0.0.1:5432 only, and let local and 127.0.0.1 connections in
# without a password (the tests connect as postgres@127.0.0.1).
configure_pg_cluster() {
	local ver=$1 conf=/etc/postgresql/$1/main tmp
	local hba=$conf/pg_hba.conf
	pg_conftool "$ver" main set port "$PG_PORT"
	# Not via pg_conftool: it writes 127.0.0.1 unquoted, which postgres rejects.
	# Debian's postgresql.conf ends with include_dir = 'conf.d', so this wins.
	mkdir -p "$conf/conf.d"
	printf "listen_addresses = '127.0.0.1'\n" >"$conf/conf.d/pscheduler-tests.conf"
	if ! grep -qF "$HBA_MARK" "$hba"; then
		# pg_hba.conf is first-match: put ours in front. Rewrite in place
		# (cat >) to keep the file's owner and mode.
		tmp=$(mktemp)
		{
			printf '%s\n' "$HBA_MARK" \
				'local all all              trust' \
				'host  all all 127.0.0.1/32 trust'
			cat "$hba"
		} >"$tmp"
		cat "$tmp" >"$hba"
		rm -f "$tmp"
	fi
}

start_postgres() {
	local ver
	ver=$(pg_version) || die "postgresql: no server installed"
	if [ ! -f "/etc/postgresql/$ver/main/postgresql.conf" ]; then
		log "postgresql: creating cluster $ver/main"
		pg_createcluster --port "$PG_PORT" --locale C.UTF-8 --start-conf manual \
			"$ver" main </dev/null >/dev/null
	fi
	configure_pg_cluster "$ver"
	log "postgresql: starting cluster $ver/main on 127.0.0.1:$PG_PORT"
	record_started "postgresql $ver"
	# --skip-systemctl-redirect: start the postmaster directly even if the
	# machine happens to run systemd.
	pg_ctlcluster --skip-systemctl-redirect "$ver" main start </dev/null
	wait_port postgresql "$PG_PORT" 60 "/var/log/postgresql/postgresql-$ver-main.log"
}

stop_postgres() {
	local ver=$1
	log "postgresql: stopping cluster $ver/main"
	pg_ctlcluster --skip-systemctl-redirect "$ver" main stop </dev/null || true
	wait_closed postgresql "$PG_PORT"
}

pg_sql() {
	PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
		-w -X -A -t -q -v ON_ERROR_STOP=1 -c "$1" </dev/null
}

# The tests use their own database, so they never touch anyone's data.
ensure_pg_database() {
	local have
	have=$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ||
		die "postgresql: cannot connect as postgres to 127.0.0.1:$PG_PORT without a password; the tests need trust auth for 127.0.0.1 in pg_hba.conf"
	if [ "$have" != 1 ]; then
		log "postgresql: creating database $PG_DB"
		pg_sql "CREATE DATABASE $PG_DB OWNER postgres"
	fi
}

# --- stop helper ---------------------------------------------------------------

wait_closed() {
	local name=$1 port=$2 i
	for ((i = 0; i < 30; i++)); do
		port_open "$port" || return 0
		sleep 1
	done
	printf 'services: WARNING: %s still listens on 127.0.0.1:%s\n' "$name" "$port" >&2
	return 1
}

# --- commands ----------------------------------------------------------------

cmd_start() {
	local pkgs
	pkgs=$(missing_packages)
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	[ -z "$pkgs" ] || apt_install $pkgs
	check_tools

	if port_open "$REDIS_PORT"; then
		log "redis: already running on 127.0.0.1:$REDIS_PORT"
	else
		start_redis
	fi
	if port_open "$AMQP_PORT"; then
		log "rabbitmq: already running on 127.0.0.1:$AMQP_PORT"
	else
		start_rabbitmq
	fi
	if port_open "$PG_PORT"; then
		log "postgresql: already running on 127.0.0.1:$PG_PORT"
	else
		start_postgres
	fi
	ensure_pg_database
	log "ready; started by this script: $(started_list)"
}

# Stop what we recorded, newest first; keep the lines we failed to stop so a
# second `stop` can retry them.
cmd_stop() {
	local name arg failed=()
	if [ ! -s "$STATE_FILE" ]; then
		log "nothing to stop: this script started no server"
		return 0
	fi
	while read -r name arg <&3; do
		case $name in
		redis) stop_redis ;;
		rabbitmq) stop_rabbitmq ;;
		epmd) stop_epmd ;;
		postgresql) stop_postgres "$arg" ;;
		*) false ;;
		esac || failed+=("$name${arg:+ $arg}")
	done 3< <(tac "$STATE_FILE")
	if ((${#failed[@]})); then
		printf '%s\n' "${failed[@]}" >"$STATE_FILE"
		die "could not stop: ${failed[*]}"
	fi
	rm -f "$STATE_FILE"
}

cmd_status() {
	local rc=0 name port who tool
	for name in redis:$REDIS_PORT rabbitmq:$AMQP_PORT postgresql:$PG_PORT; do
		port=${name#*:}
		name=${name%%:*}
		who=external
		started_by_us "$name" && who="started by services.sh"
		if port_open "$port"; then
			log "$name: up on 127.0.0.1:$port ($who)"
		else
			log "$name: DOWN on 127.0.0.1:$port"
			rc=1
		fi
	done
	if port_open "$PG_PORT"; then
		if [ "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" 2>/dev/null)" = 1 ]; then
			log "postgresql: database $PG_DB exists"
		else
			log "postgresql: database $PG_DB MISSING (or no trust auth for postgres@127.0.0.1)"
			rc=1
		fi
	fi
	for tool in "${TOOLS[@]}"; do
		command -v "$tool" >/dev/null || {
			log "tool $tool: MISSING"
			rc=1
		}
	done
	return "$rc"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac

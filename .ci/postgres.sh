#!/usr/bin/env bash
# A throwaway PostgreSQL cluster (Debian's postgresql 15) for the tests:
#   .ci/postgres.sh start DIR   initdb + pg_ctl in DIR, as an unprivileged
#                               user, on a free port, no system service;
#                               prints the cluster's URL
#   .ci/postgres.sh stop DIR    stops it and removes DIR
# Runs as root (it creates the unprivileged user the first time and installs
# the package when missing), as .ci/run does.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
user=latchkey-pg
dir="${2:?usage: postgres.sh start|stop DIR}"

case "${1:-}" in
stop)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        runuser -u "$user" -- "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
start)
    if [[ ! -x "$bin/initdb" ]]; then
        apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    fi
    id -u "$user" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    mkdir -p "$dir"
    chown "$user" "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    runuser -u "$user" -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    runuser -u "$user" -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400" \
        start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac

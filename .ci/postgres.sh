#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster (Debian's postgresql 15) in a
# temporary directory, as an unprivileged user, on a free port, with no
# system service; prints its URL on stdout. Stop it with
#   .ci/postgres.sh stop <dir>
# (the directory is the one in the URL's comment line on stderr).
# Needs root only to create the unprivileged user the first time.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
user=latchkey-pg

if [[ "${1:-}" == stop ]]; then
    runuser -u "$user" -- "$bin/pg_ctl" -D "$2/data" -m fast stop >/dev/null
    rm -rf "$2"
    exit 0
fi

if [[ ! -x "$bin/initdb" ]]; then
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"

dir="$(mktemp -d /tmp/latchkey-pg.XXXXXX)"
chown "$user" "$dir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
runuser -u "$user" -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u "$user" -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB" \
    start >/dev/null
echo "# postgres in $dir (stop: .ci/postgres.sh stop $dir)" >&2
echo "postgres://postgres@127.0.0.1:$port/postgres"

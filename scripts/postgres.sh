#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests: initdb into a
# temporary folder, listening on a loopback port only. Prints the admin URL
# on stdout. `scripts/postgres.sh stop DIR` stops it.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "postgres.sh: PostgreSQL binaries are missing; run scripts/install-deps.sh" >&2
  exit 1
fi

if [[ "${1:-}" == "stop" ]]; then
  dir=$2
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

dir=$(mktemp -d /tmp/vetting-pg.XXXXXX)
chown postgres:postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
echo "$dir" > "$dir/.dir"
echo "postgres://postgres@127.0.0.1:$port/postgres"
echo "$dir" >&2

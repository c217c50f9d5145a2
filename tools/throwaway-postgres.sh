#!/usr/bin/env bash
# A PostgreSQL server of its own for tests, benchmarks and trying the cluster on one machine: a
# data directory in DIR, run as an unprivileged user (`postgres` when started as root), listening
# on 127.0.0.1:PORT only, with user `moongate`, password `moongate` and database `moongate`.
#   tools/throwaway-postgres.sh start DIR PORT   prints the cluster URL once the server accepts connections
#   tools/throwaway-postgres.sh restart DIR      pg_ctl restart: every connection is cut, then it is back
#   tools/throwaway-postgres.sh stop DIR         stops it (the directory is left for the caller to remove)
set -euo pipefail
command=${1:?usage: throwaway-postgres.sh start DIR PORT | restart DIR | stop DIR}
dir=${2:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$command" in
start)
  port=${3:?port}
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    password_file=$(as_owner mktemp)
    as_owner sh -c "echo moongate > '$password_file'"
    as_owner "$bin/initdb" -D "$dir/data" -U moongate --pwfile="$password_file" -A scram-sha-256 \
      --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$password_file"
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  PGPASSWORD=moongate "$bin/psql" -h 127.0.0.1 -p "$port" -U moongate -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname = 'moongate'" | grep -q 1 \
    || PGPASSWORD=moongate "$bin/createdb" -h 127.0.0.1 -p "$port" -U moongate moongate
  echo "postgres://moongate:moongate@127.0.0.1:$port/moongate"
  ;;
restart)
  # The same options as at start (pg_ctl keeps them); -l so that the server never holds our stdout.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 30 restart >/dev/null
  ;;
stop)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
*)
  echo "usage: throwaway-postgres.sh start DIR PORT | restart DIR | stop DIR" >&2
  exit 2
  ;;
esac

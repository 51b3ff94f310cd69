#!/usr/bin/env bash
# Three otpd nodes on one PostgreSQL, on this machine: the shape of a production cluster, to
# try it (README, "Many nodes on PostgreSQL").  In the foreground; Ctrl-C stops the nodes and
# nginx (PostgreSQL keeps running, with its data).
#
#   1. installs what it needs (tools/deps.sh cluster: the build set, postgresql-15, nginx)
#   2. starts Debian's PostgreSQL cluster 15/main if it is down; creates the role otpd with a
#      random password and the database otpd, once (the URL, with that password, is kept in
#      .cluster/database_url, mode 0600, and reused)
#   3. builds otpd and applies the migrations (otpd migrate)
#   4. starts three nodes at once on 127.0.0.1:8001, :8002 and :8003 with the console SMS
#      backend; each node's log is printed here with its name in front ([node1] ...), codes
#      included. No SECRET_KEY: the first node to start creates it in the database and every
#      node uses that one, so a token from one node works on the others
#   5. nginx on 127.0.0.1:8000 in front of them, round robin, each request to the next node
#
# Variables: CLUSTER_NODES (3), CLUSTER_PORT (8000: nginx; the nodes take the ports after it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
STATE=$REPO/.cluster
NODES=${CLUSTER_NODES:-3}
PORT=${CLUSTER_PORT:-8000}
mkdir -p "$STATE" build
chmod 700 "$STATE"
log=$STATE/setup.log
: >"$log"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

failed() {
  echo "cluster: $1 failed; the last lines of $log:" >&2
  tail -n 25 "$log" | sed 's/^/  | /' >&2
  exit 1
}
say() { echo "cluster: $*" >&2; }

missing=$(tools/deps.sh cluster --missing) || failed "checking the packages"
if [ -n "$missing" ]; then
  say "installing $missing (log: $log)…"
  tools/deps.sh cluster >>"$log" 2>&1 || failed "installing the packages"
fi

# 2. PostgreSQL: Debian's own cluster (systemd starts it after the install; a container
# without systemd needs pg_ctlcluster).
if ! pg_lsclusters -h 2>/dev/null | awk '$1 == "15" && $2 == "main"' | grep -q online; then
  say "starting PostgreSQL 15 (cluster main)…"
  $SUDO pg_ctlcluster 15 main start >>"$log" 2>&1 || failed "starting PostgreSQL"
fi
pg_port=$(pg_lsclusters -h | awk '$1 == "15" && $2 == "main" {print $3}')
psql_admin() { $SUDO runuser -u postgres -- psql -X -q -At -p "$pg_port" -v ON_ERROR_STOP=1 "$@"; }
if [ ! -s "$STATE/database_url" ]; then
  say "creating the role otpd and the database otpd…"
  pw=$(openssl rand -hex 24)
  (umask 077 && echo "postgres://otpd:$pw@127.0.0.1:$pg_port/otpd" >"$STATE/database_url")
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'otpd'")" = 1 ]; then
    # on stdin, not in a command line that ps shows
    psql_admin <<<"ALTER ROLE otpd LOGIN PASSWORD '$pw'" >>"$log" 2>&1 || failed "setting the password of otpd"
  else
    psql_admin <<<"CREATE ROLE otpd LOGIN PASSWORD '$pw'" >>"$log" 2>&1 || failed "creating the role otpd"
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'otpd'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE otpd OWNER otpd" >>"$log" 2>&1 || failed "creating the database otpd"
  fi
fi
DATABASE_URL=$(cat "$STATE/database_url")
export DATABASE_URL

# 3. Build, migrate (the nodes would also migrate on start, taking turns: once is enough).
say "building (log: $log)…"
make -j"$(nproc)" all >>"$log" 2>&1 || failed "building"
build/otpd migrate >>"$log" 2>&1 || failed "otpd migrate"

# 4. The nodes, at once.
pids=()
stop_all() {
  trap - INT TERM EXIT
  say "stopping…"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT
upstream=""
for ((i = 1; i <= NODES; i++)); do
  port=$((PORT + i))
  upstream+="    server 127.0.0.1:$port;"$'\n'
  # nginx names the client in X-Forwarded-For: the nodes trust it (and so anyone on
  # this machine; a production node trusts only its load balancer's address)
  OTPD_LISTEN=127.0.0.1:$port SMS_BACKEND=console OTPD_LOG_FORMAT=text OTPD_TRUSTED_PROXIES=127.0.0.1 \
    build/otpd serve > >(sed -u "s/^/[node$i] /") 2>&1 &
  pids+=($!)
done

# 5. nginx in front, as a load balancer would be.
mkdir -p "$STATE/nginx"
cat >"$STATE/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $STATE/nginx/error.log warn;
pid $STATE/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $STATE/nginx/body;
  proxy_temp_path $STATE/nginx/proxy;
  fastcgi_temp_path $STATE/nginx/fastcgi;
  uwsgi_temp_path $STATE/nginx/uwsgi;
  scgi_temp_path $STATE/nginx/scgi;
  upstream otpd {
$upstream  }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://otpd;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header Host \$host;
    }
  }
}
EOF
nginx -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

for ((i = 1; i <= NODES; i++)); do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$((PORT + i))/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
say "$NODES nodes on one PostgreSQL: http://127.0.0.1:$((PORT + 1)) … :$((PORT + NODES)), and nginx in front of them on http://127.0.0.1:$PORT (Ctrl-C stops)"
wait

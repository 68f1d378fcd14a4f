#!/usr/bin/env bash
# Makes sure what the test suite talks to is here: PostgreSQL on
# 127.0.0.1:5432, Redis on 127.0.0.1:6379, and the Debian packages the
# end-to-end tests use (nginx in front of two hubs, chromium for the
# dashboard, node for the MCP Tasks requester). Installs and starts only
# what is missing; safe to re-run.
set -euo pipefail

need_pkgs=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)
# node >= 20 runs the official MCP Tasks requester (tests/mcp_requester).
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "test-deps: please install: ${need_pkgs[*]}" >&2
  fi
fi

# The requester's packages, at the versions package-lock.json pins, into
# that directory only; once (a node_modules there is kept).
requester="$(cd "$(dirname "$0")/.." && pwd)/tests/mcp_requester"
if [ ! -d "$requester/node_modules" ]; then
  echo "test-deps: installing the MCP requester (npm ci in tests/mcp_requester)"
  (cd "$requester" && npm ci --no-audit --no-fund --loglevel=error)
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "test-deps: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! port_open 6379; then
  echo "test-deps: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 50); do port_open 5432 && port_open 6379 && exit 0; sleep 0.2; done
echo "test-deps: PostgreSQL or Redis did not come up" >&2
exit 1

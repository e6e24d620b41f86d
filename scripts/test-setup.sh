#!/usr/bin/env bash
# What `make test` needs besides Python packages, set up when missing:
# - a PostgreSQL server on 127.0.0.1:5432 (the PostgreSQL half of the store and
#   engine tests): the Debian cluster is started when none answers;
# - Debian's chromium (tests/browser drive it through Playwright), prometheus
#   (tests/acceptance/test_prometheus.py scrapes the daemon with it) and cron
#   (tests/acceptance/test_import_cron.py compares imported tasks with what
#   cron runs) and systemd (tests/acceptance/test_service_install.py checks
#   the unit with systemd-analyze): installed with apt-get when missing.
# A server that answers is never touched. When something cannot be set up,
# this says what to do and fails, so `make test` stops before the suite does.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
CHROMIUM=/usr/bin/chromium
PROMETHEUS=/usr/bin/prometheus
CRON=/usr/sbin/cron
SYSTEMD_ANALYZE=/usr/bin/systemd-analyze

fail() {
  echo "scripts/test-setup.sh: $*" >&2
  exit 1
}

postgres_answers() {
  command -v pg_isready >/dev/null || fail "pg_isready not found: install PostgreSQL (apt-get install postgresql)"
  pg_isready -h "$PG_HOST" -p "$PG_PORT" -q
}

if ! postgres_answers; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$version" ] || fail "no PostgreSQL answers on $PG_HOST:$PG_PORT and no cluster exists in /etc/postgresql: install PostgreSQL (apt-get install postgresql)"
  echo "scripts/test-setup.sh: starting the PostgreSQL $version cluster 'main'"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || fail "could not start the PostgreSQL $version cluster 'main' (as root: pg_ctlcluster $version main start)"
  for _ in $(seq 1 30); do
    postgres_answers && break
    sleep 1
  done
  postgres_answers || fail "PostgreSQL $version started but does not answer on $PG_HOST:$PG_PORT"
fi

missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
[ -x "$PROMETHEUS" ] || missing+=(prometheus)
[ -x "$CRON" ] || missing+=(cron)
[ -x "$SYSTEMD_ANALYZE" ] || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || fail "missing: ${missing[*]}: install as root (apt-get install ${missing[*]})"
  echo "scripts/test-setup.sh: installing Debian's ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" \
    || fail "could not install ${missing[*]} (apt-get install ${missing[*]})"
fi

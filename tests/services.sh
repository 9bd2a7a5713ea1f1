#!/usr/bin/env bash
# Start the database servers the tests use, if they are installed but not running.
# On this machine kind PostgreSQL and MariaDB are pre-installed and usually running already.
set -u
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | head -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi
if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  if [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && \
    mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "services.sh: PostgreSQL or MariaDB is not answering on 127.0.0.1" >&2
exit 1

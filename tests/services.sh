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
# The IPv6 tests need ::1 on the loopback; a container may start with IPv6 off. Turn it on
# and fail here, as an environment problem, rather than let those tests skip unseen.
if ! ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/128'; then
  sysctl -q -w net.ipv6.conf.lo.disable_ipv6=0 2>/dev/null || true
  ip -6 addr add ::1/128 dev lo 2>/dev/null || true
  if ! ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/128'; then
    echo "services.sh: no IPv6 loopback (::1) and it cannot be added; the IPv6 tests need it" >&2
    exit 1
  fi
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && \
    mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "services.sh: PostgreSQL or MariaDB is not answering on 127.0.0.1" >&2
exit 1

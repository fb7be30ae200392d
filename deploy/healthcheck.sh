#!/bin/sh
# Health check of a Tributary container (installed as /usr/local/bin/tributary-healthcheck).
#
# Healthy when GET /readyz answers 200. A server without /readyz (404) is healthy when GET /v2/
# answers 200 or 401: the process serves the registry API. Anything else is unhealthy, including a
# /readyz answering 503 (up, but its stores are not reachable).
#
# The address comes from TRIBUTARY_LISTEN (a wildcard address is checked on loopback), https when
# TRIBUTARY_TLS_CERT is set.
set -u

listen="${TRIBUTARY_LISTEN:-0.0.0.0:5000}"
port="${listen##*:}"
host="${listen%:*}"
case "$host" in
"" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;;
esac
scheme=http
if [ -n "${TRIBUTARY_TLS_CERT:-}" ]; then
    scheme=https
fi
base="$scheme://$host:$port"

# The HTTP status of GET $1, or 000 when nothing answered.
status() {
    curl --insecure --silent --output /dev/null --max-time 4 --write-out '%{http_code}' "$base$1"
}

ready=$(status /readyz)
case "$ready" in
200)
    exit 0
    ;;
404)
    api=$(status /v2/)
    case "$api" in
    200 | 401) exit 0 ;;
    esac
    echo "unhealthy: $base/readyz answered 404 and $base/v2/ answered $api" >&2
    exit 1
    ;;
esac
echo "unhealthy: $base/readyz answered $ready" >&2
exit 1

#!/usr/bin/env bash
# A real Nacos 3 server, standalone, with its embedded database and authentication on.
#
#   deploy/nacos/run.sh PORT         build once (cached), start, stay in the foreground until SIGTERM/SIGINT
#   deploy/nacos/run.sh --build      only build (what the first start does; needs Maven Central once)
#
# Ports: PORT is the HTTP API (context path /nacos), PORT+1000 the client gRPC port (the SDK
# derives it from PORT), PORT+1001 the server-to-server gRPC port, NACOS_CONSOLE_PORT the
# console (default PORT+2000).  Nacos binds every interface (it has no setting for the
# address), so run it where that is acceptable; it announces itself as 127.0.0.1.
#
# Environment:
#   NACOS_PASSWORD      password of the admin user "nacos" (default: mcpgw-dev-password)
#   NACOS_HOME          data and logs; kept if given (its admin password must then match),
#                       otherwise a new directory removed on exit
#   NACOS_CONSOLE_PORT  the console's port (default PORT+2000)
#   NACOS_AI_ENABLED    "false" switches the AI module off: no /nacos/v3/admin/ai/* (as Nacos 2.x),
#                       and no console (Nacos 3.1's console needs the AI module)
#   NACOS_PUSH_DELAY_MS how long Nacos batches a service's changes before pushing them to
#                       subscribers (nacos.naming.push.pushTaskDelay; default: Nacos' own 500)
#   NACOS_JAVA_OPTS     extra JVM options (default: -Xms256m -Xmx768m)
#   JAVA_HOME           the JDK to use (17 or newer); otherwise `java` on PATH
#
# Ready when it prints, on standard output, the single line
#   mcpgw-nacos: ready http://127.0.0.1:PORT/nacos
# (every context started, the HTTP API answers, the admin password is set and a login with it
# succeeded).  Exit codes:
# 2 bad usage, 3 the build failed (Maven Central unreachable, say), 4 Nacos did not start.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target="$here/target"
jar="$target/mcpgw-nacos-server-1.jar"

die() { local code=$1; shift; echo "mcpgw-nacos: $*" >&2; exit "$code"; }

java_bin="java"
[ -n "${JAVA_HOME:-}" ] && java_bin="$JAVA_HOME/bin/java"
command -v "$java_bin" >/dev/null 2>&1 || die 3 "no Java found (set JAVA_HOME or put java 17+ on PATH)"

build() {
    # Rebuilt only when the project changed since the last build; Maven caches the downloads.
    if [ -f "$jar" ] && [ -f "$target/classpath.txt" ] \
        && [ -z "$(find "$here/pom.xml" "$here/src" -newer "$jar" -print -quit)" ]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die 3 "cannot build the Nacos server: mvn is not on PATH"
    echo "mcpgw-nacos: building the Nacos server from Maven Central artifacts (once; cached in $target)" >&2
    if ! mvn -q -B -f "$here/pom.xml" -DskipTests package >"$here/target.build.log" 2>&1; then
        tail -n 20 "$here/target.build.log" >&2
        die 3 "cannot build the Nacos server (is Maven Central reachable?); full log: $here/target.build.log"
    fi
    # Touch the jar so an unchanged jar from an earlier build still marks this build as done.
    touch "$jar"
}

case "${1:-}" in
    --build) build; echo "mcpgw-nacos: built $jar"; exit 0 ;;
    ''|-h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] && exit 0; exit 2 ;;
esac
port="$1"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 64000 ] || die 2 "PORT must be a number from 1 to 64000 (got '$port')"
console_port="${NACOS_CONSOLE_PORT:-$((port + 2000))}"
password="${NACOS_PASSWORD:-mcpgw-dev-password}"
ai_enabled="${NACOS_AI_ENABLED:-true}"
push_delay="${NACOS_PUSH_DELAY_MS:-500}"
[[ "$push_delay" =~ ^[0-9]+$ ]] || die 2 "NACOS_PUSH_DELAY_MS must be a number of milliseconds (got '$push_delay')"
build

own_home=""
if [ -n "${NACOS_HOME:-}" ]; then
    home="$NACOS_HOME"
    mkdir -p "$home"
else
    home="$(mktemp -d "${TMPDIR:-/tmp}/mcpgw-nacos.XXXXXX")"
    own_home="$home"
fi

pid=""
stop() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    [ -n "$own_home" ] && rm -rf "$own_home"
}
trap 'stop; exit 0' TERM INT
trap 'stop' EXIT

# shellcheck disable=SC2086  # NACOS_JAVA_OPTS is a list of options
(cd "$target" && exec "$java_bin" ${NACOS_JAVA_OPTS:--Xms256m -Xmx768m} -XX:+UseSerialGC \
    -Dnacos.home="$home" -Dnacos.inetutils.ip-address=127.0.0.1 \
    -cp "$jar:$(cat classpath.txt)" io.mcpgw.nacos.Launcher \
    --nacos.server.main.port="$port" --nacos.console.port="$console_port" \
    --nacos.extension.ai.enabled="$ai_enabled" --nacos.naming.push.pushTaskDelay="$push_delay" \
    >"$home/stdout.log" 2>&1) &
pid=$!

base="http://127.0.0.1:$port/nacos"
deadline=$((SECONDS + 180))
until grep -q '^mcpgw-nacos: started' "$home/stdout.log" 2>/dev/null \
    && curl -fsS -o /dev/null "$base/v3/admin/core/state/readiness" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -n 40 "$home/stdout.log" >&2 || true
        die 4 "Nacos exited during start-up (log above; port $port, $((port + 1000)) or $console_port in use?)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die 4 "Nacos did not answer on $base within 180 s (log: $home/stdout.log)"
    sleep 0.2
done

# A new data directory has no admin password yet: set it (Nacos answers 409 once one exists).
curl -fsS -o /dev/null -X POST "$base/v3/auth/user/admin" --data-urlencode "password=$password" \
    || die 4 "could not set the admin password through $base/v3/auth/user/admin"
if ! curl -fsS -o /dev/null -X POST "$base/v3/auth/user/login" \
    --data-urlencode "username=nacos" --data-urlencode "password=$password"; then
    die 4 "the admin user of $home has another password than NACOS_PASSWORD (use a new NACOS_HOME)"
fi

console="console http://127.0.0.1:$console_port"
[ "$ai_enabled" = "false" ] && console="no console: the AI module is off"
echo "mcpgw-nacos: ready $base (gRPC $((port + 1000)), $console, data $home)"
wait "$pid" || die 4 "Nacos exited (log: $home/stdout.log)"

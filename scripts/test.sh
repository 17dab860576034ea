#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called from traps and indirectly are reachable
# The one command that runs the whole workspace's tests (DESIGN.md section 9).
#
#   bash scripts/test.sh [extra args for the first `cargo test`]
#
# For every backend endpoint variable that is not already set, it provides the
# service and exports the variable:
#   FLAMINGOCK_TEST_POSTGRES_URL  PostgreSQL on 127.0.0.1:5432 (started with pg_ctlcluster if
#                                 it is installed but not running)
#   FLAMINGOCK_TEST_MYSQL_URL     MariaDB (or MySQL) on 127.0.0.1:3306, user root without a password,
#                                 database test (mariadbd started if it is installed but not
#                                 running; Debian's mariadb-server installed if it is missing)
#   FLAMINGOCK_TEST_RABBITMQ_URL  RabbitMQ on 127.0.0.1:5672, guest/guest (rabbitmq-server started if
#                                 it is installed but not running), for the RabbitMQ target
#   FLAMINGOCK_TEST_NATS_URL      NATS with JetStream on 127.0.0.1:4222 (nats-server -js started if it
#                                 is installed but not running), for the NATS target
#   FLAMINGOCK_TEST_REDIS_URL     Redis on 127.0.0.1:6379 (started with redis-server if it is
#                                 installed but not running)
#   FLAMINGOCK_TEST_MONGODB_URL   SecantusDB (secantusd-py, in-memory) on a free loopback port
#   FLAMINGOCK_TEST_MONGODB_STANDALONE_URL
#                                 a second SecantusDB started with --standalone (no replica set,
#                                 so no transactions: the store's detection path)
#   FLAMINGOCK_TEST_DYNAMODB_URL  moto's server (DynamoDB API) on a free loopback port, run through
#                                 scripts/moto_server_serial.py, which makes its requests atomic
#   FLAMINGOCK_TEST_AWS_URL       moto's server again, for the S3 and SQS targets (the same one when
#                                 this script started it; another when a DynamoDB endpoint was given)
# It also installs PgBouncer (Debian's package) when missing: the PostgreSQL suites start private
# poolers of their own on free ports, in transaction and in session mode.
# SecantusDB and moto come from a private virtualenv under the build cache, installed from the
# pinned scripts/requirements-test-servers.txt and reused while those pins are unchanged.
# Everything this script starts is stopped again when it exits. Server logs are kept in
# $FLAMINGOCK_CACHE_DIR/logs/.
#
# Then it runs `cargo test --workspace --all-targets --no-fail-fast "$@"`, `cargo test --workspace --doc` and
# the CLI's MongoDB/DynamoDB tests (behind features), and exits non-zero if any failed.
#
# It also exports FLAMINGOCK_TEST_SECANTUSD (the virtualenv's secantusd-py) and
# FLAMINGOCK_TEST_PYTHON (the virtualenv's interpreter, for moto) for tests that start and kill
# SecantusDB and moto servers of their own (with TLS, for instance).
#
# Knobs: CARGO_TARGET_DIR, FLAMINGOCK_CACHE_DIR (see scripts/env.sh), FLAMINGOCK_PYTHON
# (interpreter used to create the virtualenv, default python3), and the endpoint variables
# above (a set variable is used as given and nothing is started for it).
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FLAMINGOCK_REPO_ROOT"

REQUIREMENTS="$FLAMINGOCK_REPO_ROOT/scripts/requirements-test-servers.txt"
VENV="$FLAMINGOCK_CACHE_DIR/venv"
LOG_DIR="$FLAMINGOCK_CACHE_DIR/logs"
SERVER_START_TIMEOUT=60
mkdir -p "$LOG_DIR"
find "$LOG_DIR" -type f -name '*.log' -mtime +7 -exec rm -f {} + 2>/dev/null || true
# Per-run scratch directory: working directory and TMPDIR of the servers started here.
RUN_DIR="$(mktemp -d "$FLAMINGOCK_CACHE_DIR/run.XXXXXX")"
RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"

say() { printf 'test.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

now() {
    local t="${EPOCHREALTIME:-$SECONDS}"
    printf '%s' "${t/,/.}"
}
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup

MONGO_PID="" MONGO_LOG=""
MONGO_SA_PID=""
MOTO_PID="" MOTO_LOG=""
MOTO_AWS_PID=""
STARTED_PG_VERSIONS=""
STARTED_REDIS=""
STARTED_MARIADB=""
STARTED_RABBITMQ=""
NATS_PID=""

# True while $1 is a live process (a zombie child that has exited does not count).
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ -n $state && $state != Z* ]]
}

stop_process() { # name pid
    local name=$1 pid=$2 i
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_process "SecantusDB" "$MONGO_PID"
    stop_process "SecantusDB (standalone)" "$MONGO_SA_PID"
    stop_process "moto" "$MOTO_PID"
    stop_process "moto (S3, SQS)" "$MOTO_AWS_PID"
    stop_process "nats-server" "$NATS_PID"
    if [[ -n $STARTED_RABBITMQ ]]; then
        rabbitmqctl stop >/dev/null 2>&1 || true
    fi
    if [[ -n $STARTED_MARIADB ]]; then
        mariadb-admin -h 127.0.0.1 -P 3306 -u root shutdown >/dev/null 2>&1 || true
    fi
    if [[ -n $STARTED_REDIS ]]; then
        redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
    fi
    local v
    for v in $STARTED_PG_VERSIONS; do
        pg_ctlcluster --skip-systemctl-redirect "$v" main stop >/dev/null 2>&1 || true
    done
    rm -rf "$RUN_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# True if something accepts TCP connections on $1:$2.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

print_log_tail() { # name logfile
    [[ -f $2 ]] || return 0
    say "last lines of the $1 log ($2):"
    tail -n 40 "$2" | sed 's/^/    /' >&2
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL and Redis: the machine's own servers on their standard loopback ports

provide_postgres() {
    if [[ -n ${FLAMINGOCK_TEST_POSTGRES_URL:-} ]]; then
        say "postgres: $FLAMINGOCK_TEST_POSTGRES_URL (given)"
        return 0
    fi
    local url="postgres://postgres@127.0.0.1:5432/test" how="found running" i v
    pg_up() {
        if command -v pg_isready >/dev/null 2>&1; then
            pg_isready -q -h 127.0.0.1 -p 5432 -t 2
        else
            port_open 127.0.0.1 5432
        fi
    }
    if ! pg_up; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
            for v in /etc/postgresql/*/; do
                v="$(basename "$v")"
                if pg_ctlcluster --skip-systemctl-redirect "$v" main start >"$LOG_DIR/postgres-start.$RUN_ID.log" 2>&1; then
                    STARTED_PG_VERSIONS="$STARTED_PG_VERSIONS $v"
                fi
            done
            for ((i = 0; i < 300; i++)); do
                pg_up && break
                sleep 0.1
            done
            how="started"
        fi
        if ! pg_up; then
            print_log_tail "pg_ctlcluster" "$LOG_DIR/postgres-start.$RUN_ID.log"
            say "postgres: not available on 127.0.0.1:5432 and could not be started;" \
                "set FLAMINGOCK_TEST_POSTGRES_URL to provide one"
            return 0
        fi
    fi
    # The default URL names the database `test`; create it if the server lacks it.
    if command -v psql >/dev/null 2>&1 &&
        ! psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
        createdb -h 127.0.0.1 -p 5432 -U postgres test >/dev/null 2>&1 || true
    fi
    export FLAMINGOCK_TEST_POSTGRES_URL="$url"
    say "postgres: $url ($how)"
}

provide_redis() {
    if [[ -n ${FLAMINGOCK_TEST_REDIS_URL:-} ]]; then
        say "redis:    $FLAMINGOCK_TEST_REDIS_URL (given)"
        return 0
    fi
    local url="redis://127.0.0.1:6379/" how="found running" i
    redis_up() {
        if command -v redis-cli >/dev/null 2>&1; then
            [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]
        else
            port_open 127.0.0.1 6379
        fi
    }
    if ! redis_up; then
        if command -v redis-server >/dev/null 2>&1; then
            (cd "$RUN_DIR" && redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
                --logfile "$LOG_DIR/redis.$RUN_ID.log") </dev/null >/dev/null 2>&1 || true
            for ((i = 0; i < 100; i++)); do
                redis_up && break
                sleep 0.1
            done
            how="started"
            redis_up && STARTED_REDIS=1
        fi
        if ! redis_up; then
            print_log_tail "redis" "$LOG_DIR/redis.$RUN_ID.log"
            say "redis:    not available on 127.0.0.1:6379 and could not be started;" \
                "set FLAMINGOCK_TEST_REDIS_URL to provide one"
            return 0
        fi
    fi
    export FLAMINGOCK_TEST_REDIS_URL="$url"
    say "redis:    $url ($how)"
}

# ---------------------------------------------------------------------------------------------
# The Python virtualenv with SecantusDB and moto

ensure_venv() {
    local py="${FLAMINGOCK_PYTHON:-python3}" want have="" t0
    command -v "$py" >/dev/null 2>&1 ||
        die "$py not found: Python >= 3.10 is needed for the MongoDB and DynamoDB test servers" \
            "(or set FLAMINGOCK_TEST_MONGODB_URL and FLAMINGOCK_TEST_DYNAMODB_URL)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$py is older than 3.10; SecantusDB needs Python >= 3.10 (set FLAMINGOCK_PYTHON)"
    # The virtualenv is reused while the pinned requirements and the interpreter are unchanged.
    want="$("$py" -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.version.encode()).hexdigest())' "$REQUIREMENTS")"

    # Serialise concurrent runs that share the cache directory.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$FLAMINGOCK_CACHE_DIR/venv.lock"
        flock 9
    fi
    [[ -f $VENV/.requirements.sha256 ]] && have="$(cat "$VENV/.requirements.sha256")"
    if [[ $have == "$want" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
        say "python:   reusing virtualenv $VENV"
    else
        t0="$(now)"
        say "python:   installing pinned test servers into $VENV (first run takes about a minute)"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" >"$LOG_DIR/venv.$RUN_ID.log" 2>&1 || {
            print_log_tail "venv" "$LOG_DIR/venv.$RUN_ID.log"
            die "could not create a virtualenv with $py -m venv (on Debian: apt-get install python3-venv)"
        }
        if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install \
            --require-virtualenv -r "$REQUIREMENTS" >>"$LOG_DIR/venv.$RUN_ID.log" 2>&1; then
            print_log_tail "pip install" "$LOG_DIR/venv.$RUN_ID.log"
            rm -rf "$VENV"
            die "pip install -r scripts/requirements-test-servers.txt failed"
        fi
        printf '%s\n' "$want" >"$VENV/.requirements.sha256"
        say "python:   virtualenv ready in $(elapsed "$t0")s"
    fi
    if command -v flock >/dev/null 2>&1; then
        flock -u 9
        exec 9>&-
    fi
}

free_port() {
    "$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Checks that the server really answers its protocol, not just that the port is open.
mongo_ping() { # url
    "$VENV/bin/python" - "$1" <<'EOF'
import sys
from pymongo import MongoClient
client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)
client.admin.command("ping")
EOF
}
dynamodb_ping() { # url
    "$VENV/bin/python" - "$1" <<'EOF'
import sys
import boto3
boto3.client("dynamodb", endpoint_url=sys.argv[1], region_name="us-east-1",
             aws_access_key_id="test", aws_secret_access_key="test").list_tables()
EOF
}

# start_server NAME PING_FN URL_TEMPLATE CMD... ; the literal PORT in URL_TEMPLATE and CMD is
# replaced with a free port. Sets STARTED_PID, STARTED_LOG, STARTED_URL, STARTED_SECS.
start_server() {
    local name=$1 ping=$2 url_template=$3
    shift 3
    local attempt port pid log url t0 arg deadline ok
    local -a cmd
    for attempt in 1 2 3; do
        port="$(free_port)"
        url="${url_template//PORT/$port}"
        cmd=()
        for arg in "$@"; do cmd+=("${arg//PORT/$port}"); done
        log="$LOG_DIR/$name.$RUN_ID.$attempt.log"
        mkdir -p "$RUN_DIR/$name-tmp"
        t0="$(now)"
        (cd "$RUN_DIR" && TMPDIR="$RUN_DIR/$name-tmp" exec "${cmd[@]}") </dev/null >"$log" 2>&1 &
        pid=$!
        deadline=$((SECONDS + SERVER_START_TIMEOUT))
        ok=""
        while alive "$pid" && ((SECONDS < deadline)); do
            if port_open 127.0.0.1 "$port"; then
                ok=1
                break
            fi
            sleep 0.05
        done
        # Port open: check the protocol and that the answer came from our process (the port
        # may have been taken by someone else between choosing it and binding it).
        if [[ -n $ok ]] && "$ping" "$url" >>"$log" 2>&1 && alive "$pid"; then
            STARTED_PID=$pid STARTED_LOG=$log STARTED_URL=$url STARTED_SECS="$(elapsed "$t0")"
            return 0
        fi
        if alive "$pid"; then
            if ((SECONDS >= deadline)); then
                stop_process "$name" "$pid"
                print_log_tail "$name" "$log"
                die "$name did not accept connections on port $port within ${SERVER_START_TIMEOUT}s"
            fi
            stop_process "$name" "$pid"
            print_log_tail "$name" "$log"
            die "$name accepts connections on port $port but does not answer its protocol"
        fi
        wait "$pid" 2>/dev/null || true
        say "$name exited during start-up (attempt $attempt, port $port)"
        print_log_tail "$name" "$log"
    done
    die "$name could not be started"
}

provide_mongodb() {
    if [[ -n ${FLAMINGOCK_TEST_MONGODB_URL:-} ]]; then
        say "mongodb:  $FLAMINGOCK_TEST_MONGODB_URL (given)"
        return 0
    fi
    # An empty --config file turns off secantusd-py's config auto-discovery
    # (./secantusd.toml, ~/.secantus/secantusd.toml, ...), so only the flags here apply.
    : >"$RUN_DIR/secantusd.toml"
    start_server secantusd mongo_ping "mongodb://127.0.0.1:PORT/?directConnection=true" \
        "$VENV/bin/secantusd-py" --config "$RUN_DIR/secantusd.toml" \
        --host 127.0.0.1 --port PORT --storage-path :memory:
    MONGO_PID=$STARTED_PID MONGO_LOG=$STARTED_LOG
    export FLAMINGOCK_TEST_MONGODB_URL="$STARTED_URL"
    say "mongodb:  $STARTED_URL (started SecantusDB, ready in ${STARTED_SECS}s, log $MONGO_LOG)"
}

provide_mongodb_standalone() {
    if [[ -n ${FLAMINGOCK_TEST_MONGODB_STANDALONE_URL:-} ]]; then
        say "mongodb standalone: $FLAMINGOCK_TEST_MONGODB_STANDALONE_URL (given)"
        return 0
    fi
    : >"$RUN_DIR/secantusd-standalone.toml"
    start_server secantusd-standalone mongo_ping "mongodb://127.0.0.1:PORT/?directConnection=true" \
        "$VENV/bin/secantusd-py" --config "$RUN_DIR/secantusd-standalone.toml" \
        --host 127.0.0.1 --port PORT --storage-path :memory: --standalone
    MONGO_SA_PID=$STARTED_PID
    export FLAMINGOCK_TEST_MONGODB_STANDALONE_URL="$STARTED_URL"
    say "mongodb standalone: $STARTED_URL (started SecantusDB --standalone, ready in ${STARTED_SECS}s)"
}

provide_dynamodb() {
    if [[ -n ${FLAMINGOCK_TEST_DYNAMODB_URL:-} ]]; then
        say "dynamodb: $FLAMINGOCK_TEST_DYNAMODB_URL (given)"
        return 0
    fi
    # moto_server with its requests serialised: see the comment in scripts/moto_server_serial.py.
    start_server moto dynamodb_ping "http://127.0.0.1:PORT" \
        "$VENV/bin/python" "$FLAMINGOCK_REPO_ROOT/scripts/moto_server_serial.py" -H 127.0.0.1 -p PORT
    MOTO_PID=$STARTED_PID MOTO_LOG=$STARTED_LOG
    export FLAMINGOCK_TEST_DYNAMODB_URL="$STARTED_URL"
    say "dynamodb: $STARTED_URL (started moto, ready in ${STARTED_SECS}s, log $MOTO_LOG)"
}

# ---------------------------------------------------------------------------------------------

# PgBouncer, for the PostgreSQL suites that run through a private pooler of their own
# (flamingock_test_support::pgbouncer starts it): installed from Debian's packages when missing.
# MariaDB (or MySQL): the machine's own server on its standard loopback port.
provide_mysql() {
    if [[ -n ${FLAMINGOCK_TEST_MYSQL_URL:-} ]]; then
        say "mysql:    $FLAMINGOCK_TEST_MYSQL_URL (given)"
        return 0
    fi
    local url="mysql://root@127.0.0.1:3306/test" how="found running" i sudo=""
    if ((EUID != 0)); then sudo="sudo"; fi
    mysql_up() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
    if ! mysql_up; then
        if ! [[ -x /usr/sbin/mariadbd ]] && command -v apt-get >/dev/null 2>&1; then
            say "mysql:    installing Debian's mariadb-server"
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q mariadb-server \
                >"$LOG_DIR/apt-mariadb.$RUN_ID.log" 2>&1 || true
        fi
        if [[ -x /usr/sbin/mariadbd ]]; then
            $sudo mkdir -p /run/mysqld && $sudo chown mysql:mysql /run/mysqld 2>/dev/null || true
            $sudo start-stop-daemon --start --oknodo --background --chuid mysql \
                --exec /usr/sbin/mariadbd -- --bind-address=127.0.0.1 --port=3306 \
                >"$LOG_DIR/mariadb-start.$RUN_ID.log" 2>&1 || true
            for ((i = 0; i < 60; i++)); do
                mysql_up && break
                sleep 0.5
            done
            mysql_up && STARTED_MARIADB=1 how="started"
        fi
        if ! mysql_up; then
            print_log_tail "mariadb" "$LOG_DIR/mariadb-start.$RUN_ID.log"
            say "mysql:    not available on 127.0.0.1:3306 and could not be started;" \
                "set FLAMINGOCK_TEST_MYSQL_URL to provide one"
            return 0
        fi
    fi
    # root on loopback without a password, as the tests connect; database test.
    mariadb -h 127.0.0.1 -P 3306 -u root -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null 2>&1 || true
    export FLAMINGOCK_TEST_MYSQL_URL="$url"
    say "mysql:    $url ($how)"
}

# RabbitMQ: the machine's own broker on its standard loopback port.
provide_rabbitmq() {
    if [[ -n ${FLAMINGOCK_TEST_RABBITMQ_URL:-} ]]; then
        say "rabbitmq: $FLAMINGOCK_TEST_RABBITMQ_URL (given)"
        return 0
    fi
    local url="amqp://guest:guest@127.0.0.1:5672/%2f" how="found running" i
    if ! port_open 127.0.0.1 5672; then
        if command -v rabbitmq-server >/dev/null 2>&1; then
            rabbitmq-server -detached >"$LOG_DIR/rabbitmq-start.$RUN_ID.log" 2>&1 || true
            for ((i = 0; i < 120; i++)); do
                port_open 127.0.0.1 5672 && break
                sleep 0.5
            done
            port_open 127.0.0.1 5672 && STARTED_RABBITMQ=1 how="started"
        fi
        if ! port_open 127.0.0.1 5672; then
            print_log_tail "rabbitmq" "$LOG_DIR/rabbitmq-start.$RUN_ID.log"
            say "rabbitmq: not available on 127.0.0.1:5672 and could not be started;" \
                "set FLAMINGOCK_TEST_RABBITMQ_URL to provide one"
            return 0
        fi
    fi
    export FLAMINGOCK_TEST_RABBITMQ_URL="$url"
    say "rabbitmq: $url ($how)"
}

# NATS with JetStream: the machine's own server on its standard loopback port.
provide_nats() {
    if [[ -n ${FLAMINGOCK_TEST_NATS_URL:-} ]]; then
        say "nats:     $FLAMINGOCK_TEST_NATS_URL (given)"
        return 0
    fi
    local url="nats://127.0.0.1:4222" how="found running" i
    if ! port_open 127.0.0.1 4222; then
        if command -v nats-server >/dev/null 2>&1; then
            nats-server -js -a 127.0.0.1 -p 4222 -sd "$RUN_DIR/nats" \
                >"$LOG_DIR/nats.$RUN_ID.log" 2>&1 </dev/null &
            NATS_PID=$!
            for ((i = 0; i < 60; i++)); do
                port_open 127.0.0.1 4222 && break
                sleep 0.25
            done
            how="started"
        fi
        if ! port_open 127.0.0.1 4222; then
            print_log_tail "nats" "$LOG_DIR/nats.$RUN_ID.log"
            say "nats:     not available on 127.0.0.1:4222 and could not be started;" \
                "set FLAMINGOCK_TEST_NATS_URL to provide one"
            return 0
        fi
    fi
    export FLAMINGOCK_TEST_NATS_URL="$url"
    say "nats:     $url ($how)"
}

# S3 and SQS: moto's server, the DynamoDB one when this script started it.
provide_aws() {
    if [[ -n ${FLAMINGOCK_TEST_AWS_URL:-} ]]; then
        say "aws:      $FLAMINGOCK_TEST_AWS_URL (given)"
        return 0
    fi
    if [[ -n $MOTO_PID ]]; then
        export FLAMINGOCK_TEST_AWS_URL="$FLAMINGOCK_TEST_DYNAMODB_URL"
        say "aws:      $FLAMINGOCK_TEST_AWS_URL (the moto server started for DynamoDB)"
        return 0
    fi
    start_server moto-aws dynamodb_ping "http://127.0.0.1:PORT" \
        "$VENV/bin/python" "$FLAMINGOCK_REPO_ROOT/scripts/moto_server_serial.py" -H 127.0.0.1 -p PORT
    MOTO_AWS_PID=$STARTED_PID
    export FLAMINGOCK_TEST_AWS_URL="$STARTED_URL"
    say "aws:      $STARTED_URL (started moto, ready in ${STARTED_SECS}s)"
}

provide_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
        say "pgbouncer: found ($( (command -v pgbouncer || echo /usr/sbin/pgbouncer) | head -1))"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "pgbouncer is missing and apt-get is not available: install PgBouncer (1.18 or later)"
    say "pgbouncer: installing Debian's package"
    local sudo=""
    if ((EUID != 0)); then sudo="sudo"; fi
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q pgbouncer >"$LOG_DIR/apt-pgbouncer.$RUN_ID.log" 2>&1; then
        $sudo apt-get update -q >>"$LOG_DIR/apt-pgbouncer.$RUN_ID.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q pgbouncer >>"$LOG_DIR/apt-pgbouncer.$RUN_ID.log" 2>&1 ||
            die "could not install pgbouncer (log: $LOG_DIR/apt-pgbouncer.$RUN_ID.log)"
    fi
    # The package's own service is not needed: the tests start private ones.
    $sudo service pgbouncer stop >/dev/null 2>&1 || true
}

main() {
    provide_postgres
    provide_redis
    provide_mysql
    provide_rabbitmq
    provide_nats
    provide_pgbouncer
    if [[ -z ${FLAMINGOCK_TEST_MONGODB_URL:-} || -z ${FLAMINGOCK_TEST_DYNAMODB_URL:-} ||
        -z ${FLAMINGOCK_TEST_MONGODB_STANDALONE_URL:-} ||
        -z ${FLAMINGOCK_TEST_SECANTUSD:-} || -z ${FLAMINGOCK_TEST_PYTHON:-} ]]; then
        ensure_venv
        # For tests that start (and kill) private SecantusDB servers of their own.
        export FLAMINGOCK_TEST_SECANTUSD="${FLAMINGOCK_TEST_SECANTUSD:-$VENV/bin/secantusd-py}"
        # For tests that start private moto servers (e.g. with TLS).
        export FLAMINGOCK_TEST_PYTHON="${FLAMINGOCK_TEST_PYTHON:-$VENV/bin/python}"
    fi
    provide_mongodb
    provide_mongodb_standalone
    provide_dynamodb
    provide_aws

    # Credentials and region for the DynamoDB client; moto accepts any key.
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
    export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
    export AWS_REGION="${AWS_REGION:-us-east-1}"
    export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}" # the name Python's boto3 reads
    # Keep the AWS SDK from probing the instance-metadata endpoint.
    export AWS_EC2_METADATA_DISABLED="${AWS_EC2_METADATA_DISABLED:-true}"

    say "cargo:    CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

    status=0
    cargo test --workspace --all-targets --no-fail-fast "$@" || status=$?
    doc_status=0
    cargo test --workspace --doc || doc_status=$?
    if ((status == 0)); then status=$doc_status; fi
    # The CLI's MongoDB and DynamoDB store selection sits behind features the
    # workspace run does not turn on.
    nosql_status=0
    cargo test -p flamingock-cli --features mongodb,dynamodb --test cli_nosql || nosql_status=$?
    if ((status == 0)); then status=$nosql_status; fi

    if ((status != 0)); then
        [[ -n $MONGO_LOG ]] && print_log_tail "SecantusDB" "$MONGO_LOG"
        [[ -n $MOTO_LOG ]] && print_log_tail "moto" "$MOTO_LOG"
    fi
    exit "$status"
}

# Everything above is only definitions; the whole script is parsed before it runs, so editing
# this file while a run is in progress cannot change that run.
main "$@"
exit

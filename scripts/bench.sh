#!/usr/bin/env bash
# Measure solopool on this machine with solopool-bench (docs/performance.md explains the numbers).
#
# Starts everything it needs on loopback and stops it all again:
#   1. a fake bitcoind serving a mainnet-difficulty template (solopool-bench fake-node), and
#      solopool on it twice: submit throughput with random nonces (1 and 2 client processes,
#      and 1,000 miners without pipelining), then with real shares (difficulty pinned low so
#      the client can hash them); and fan-out of fake blocks on that mainnet-sized template;
#   2. a regtest bitcoind with ZMQ, and solopool on it with ZMQ: 10,000 idle connections
#      (memory, accept rate), then new-block fan-out at 1,000 and 10,000 miners (and at 1,000
#      miners with 1,000 different payout addresses);
#   3. solopool on the same node without ZMQ (longpoll): fan-out again.
# With BENCH_WORKERS (default 2), solopool also runs as several processes (`[stratum] workers`:
# Stratum workers sharing the port with SO_REUSEPORT under a coordinator): submit throughput
# (200 miners x window 8 with 1 and 2 client processes, 1,000 miners x window 1) after part 1,
# and 10,000 connections and ZMQ fan-out at 1,000 and 10,000 miners in part 2. Those rows are
# labelled "workers=N" and sit next to the single-process ones; the pool's CPU, RSS and fds are
# summed over all its processes.
# Then the machine's own limits, without solopool: the submit runs against an echo pool that
# answers with canned lines (the ceiling the client and kernel allow any pool here), and the
# per-miner cost of a plain send() to loopback miners (the floor of any fan-out here).
# Prints one table at the end; the JSON results stay in $BENCH_OUT.
#
# Env: BENCH_OUT (results directory, default a new /tmp/solopool-bench.*), BENCH_SUBMIT_SECONDS
# (15), BENCH_BLOCKS (20), BENCH_FANOUT_MINERS (1000,10000), BENCH_CONNECTIONS (10000),
# BENCH_TEMPLATE (tests/data/gbt_mainnet.json), BENCH_EXTRA_TXS (3000), BENCH_QUICK=1 (a short
# smoke run: 3 s, 3 blocks, 200/1,000 miners), BENCH_WORKERS (2; empty: no multi-process runs),
# BITCOIND (as for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_SUBMIT_SECONDS:=3}" "${BENCH_BLOCKS:=3}" "${BENCH_FANOUT_MINERS:=200,1000}"
    : "${BENCH_CONNECTIONS:=1000}"
fi
SUBMIT_SECONDS=${BENCH_SUBMIT_SECONDS:-15}
BLOCKS=${BENCH_BLOCKS:-20}
FANOUT_MINERS=${BENCH_FANOUT_MINERS:-1000,10000}
CONNECTIONS=${BENCH_CONNECTIONS:-10000}
TEMPLATE=${BENCH_TEMPLATE:-tests/data/gbt_mainnet.json}
EXTRA_TXS=${BENCH_EXTRA_TXS:-3000}
WORKERS=${BENCH_WORKERS-2}  # set but empty: skip the multi-process runs
if [ -n "$WORKERS" ] && ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "bench: BENCH_WORKERS must be a process count (or empty), not '$WORKERS'" >&2
    exit 2
fi
OUT=${BENCH_OUT:-$(mktemp -d /tmp/solopool-bench.XXXXXX)}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/solopool-bench-work.XXXXXX)

say() { printf '\n== %s\n' "$*" >&2; }

# --- solopool, its tools (solopool-bench) and a bitcoind -----------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e . >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./tools >/dev/null
PY=.venv/bin/python
BENCH=.venv/bin/solopool-bench

if [ -n "${BITCOIND:-}" ]; then
    bitcoind=$BITCOIND
elif command -v bitcoind >/dev/null 2>&1; then
    bitcoind=$(command -v bitcoind)
elif [ -x .node/bin/bitcoind ]; then
    bitcoind=$ROOT/.node/bin/bitcoind
else
    say "installing a regtest node (scripts/install-node.sh)"
    bitcoind=$(scripts/install-node.sh | tail -n 1)
fi

# 10,000 connections need 10,000 file descriptors in the pool and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 500)) ]; then
    echo "bench: the fd limit is $(ulimit -n); lowering BENCH_CONNECTIONS to fit" >&2
    CONNECTIONS=$(($(ulimit -n) - 500))
fi

# --- processes we start, and stopping them ------------------------------------------------------
pids=()
NODE_ARGS=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ ${#NODE_ARGS[@]} -gt 0 ]; then
        "$(dirname "$bitcoind")/bitcoin-cli" "${NODE_ARGS[@]}" stop >/dev/null 2>&1 || true
    fi
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {  # port, what
    local i
    for i in $(seq 1 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "bench: $2 did not open port $1; see $OUT/logs" >&2
    exit 1
}

# A pool config with only the keys this solopool knows (it refuses unknown ones).
write_config() {  # file, then section.key=TOML-value ...
    "$PY" - "$@" <<'PYEOF'
import dataclasses, os, sys
from pool import config
path, items = sys.argv[1], sys.argv[2:]
classes = {"node": "NodeConfig", "stratum": "StratumConfig", "pool": "PoolConfig", "api": "ApiConfig",
           "stratum_v2": "StratumV2Config"}
sections: dict = {}
for item in items:
    key, value = item.split("=", 1)
    section, name = key.split(".", 1)
    cls = getattr(config, classes[section], None)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        print(f"bench: this solopool has no [{section}] {name}; left out", file=sys.stderr)
        continue
    sections.setdefault(section, []).append(f"{name} = {value}")
with open(path, "w") as f:
    for section, lines in sections.items():
        f.write(f"[{section}]\n" + "\n".join(lines) + "\n\n")
os.chmod(path, 0o600)
PYEOF
}

# The pool's process and its descendants (its Stratum workers when it runs several processes).
pool_tree() {  # pid
    "$PY" -c 'import sys; from solopool_tools.bench.procfs import PoolProcesses as P
print(*P([int(sys.argv[1])]).pids())' "$1" 2>/dev/null || echo "$1"
}

POOL_PID=""
POOL_PORT=""
start_pool() {  # name, config, port
    .venv/bin/solopool --config "$2" >"$OUT/logs/pool-$1.log" 2>&1 &
    POOL_PID=$!
    POOL_PORT=$3
    pids+=("$POOL_PID")
    wait_port "$3" "solopool ($1)"
}
stop_pool() {  # the pool stops its workers; any it leaves behind (by pid) are stopped too
    local tree pid
    read -r -a tree <<<"$(pool_tree "$POOL_PID")"
    kill -TERM "$POOL_PID" 2>/dev/null || true
    wait "$POOL_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$POOL_PORT") 2>/dev/null || return 0
        sleep 0.2
    done
    echo "bench: port $POOL_PORT still open after the pool (pid $POOL_PID) stopped;" \
        "stopping what is left of its processes: ${tree[*]}" >&2
    for pid in "${tree[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}

# Whether `write_config` kept [stratum] workers (a solopool without multi-process mode has no
# such key: then the "workers=N" runs would measure a single process and are skipped).
has_workers() {  # config
    grep -q '^workers = ' "$1"
}

bench() {  # every run is bounded: the bench's own --max-seconds, and timeout(1) around it
    "$BENCH" wait-quiet --max-seconds 20
    timeout 900 "$BENCH" "$@" --max-seconds 840 >&2 || echo "bench: '$1' run failed" >&2
}

STRATUM_COMMON=(
    'stratum.host="127.0.0.1"'
    'stratum.max_connections=100000'
    'stratum.max_connections_per_ip=1000000'
    'stratum.max_invalid_shares_per_minute=10000000'
    'api.enabled=false'
)

# --- 1. submit throughput on a mainnet-difficulty template ---------------------------------------
FAKE_PORT=$(free_port)
say "fake node: $TEMPLATE + $EXTRA_TXS synthetic transactions on port $FAKE_PORT"
"$BENCH" fake-node --template "$TEMPLATE" --extra-txs "$EXTRA_TXS" --port "$FAKE_PORT" \
    --rpc-user bench --rpc-password bench --max-seconds 1800 >"$OUT/logs/fake-node.log" 2>&1 &
FAKE_PID=$!
pids+=("$FAKE_PID")
wait_port "$FAKE_PORT" "the fake node"
FAKE_NODE=(--node-rpc "http://127.0.0.1:$FAKE_PORT" --node-user bench --node-password bench)
fake_node_config=(
    "node.rpc_url=\"http://127.0.0.1:$FAKE_PORT\"" 'node.rpc_user="bench"'
    'node.rpc_password="bench"' 'node.poll_seconds=30'
)

PORT=$(free_port)
write_config "$WORK/submit.toml" "${fake_node_config[@]}" "${STRATUM_COMMON[@]}" \
    "stratum.port=$PORT" "pool.data_dir=\"$WORK/data-submit\""
say "submit throughput, random nonces (solopool at difficulty 1024: every share is rejected)"
start_pool submit "$WORK/submit.toml" "$PORT"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --client-procs 1 \
    --label "random nonces, 1 client proc" --out "$OUT/submit-random-1proc.json"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --client-procs 2 \
    --label "random nonces, 2 client procs" --out "$OUT/submit-random-2proc.json"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --miners 1000 --window 1 \
    --label "random nonces, no pipelining" --out "$OUT/submit-random-window1.json"
say "fan-out on the mainnet-sized template (fake blocks from the fake node; the pool on longpoll)"
bench fanout --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" "${FAKE_NODE[@]}" \
    --miners "${FANOUT_MINERS%%,*}" --blocks "$BLOCKS" \
    --label "pool on longpoll, $EXTRA_TXS-transaction mainnet template" \
    --out "$OUT/fanout-mainnet-template.json"
stop_pool

PORT=$(free_port)
write_config "$WORK/valid.toml" "${fake_node_config[@]}" "${STRATUM_COMMON[@]}" \
    "stratum.port=$PORT" 'stratum.start_difficulty=1e-9' 'stratum.min_difficulty=1e-9' \
    'stratum.max_difficulty=1e-9' "pool.data_dir=\"$WORK/data-valid\""
say "submit throughput, real shares (difficulty pinned at 1e-9 so the client can hash them)"
start_pool valid "$WORK/valid.toml" "$PORT"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --valid-ratio 1 \
    --label "valid shares, 1 client proc" --out "$OUT/submit-valid-1proc.json"
stop_pool

# V1 and SV2 on one pool, back to back: random nonces (every share refused at difficulty
# 1024), then real shares (difficulty pinned at 1e-9, every share accepted).
for kind in random valid; do
    PORT=$(free_port)
    SV2_PORT=$(free_port)
    pinned=()
    valid=()
    if [ "$kind" = valid ]; then
        pinned=('stratum.start_difficulty=1e-9' 'stratum.min_difficulty=1e-9'
                'stratum.max_difficulty=1e-9')
        valid=(--valid-ratio 1)
    fi
    write_config "$WORK/sv2-$kind.toml" "${fake_node_config[@]}" "${STRATUM_COMMON[@]}" \
        "${pinned[@]}" "stratum.port=$PORT" "stratum_v2.port=$SV2_PORT" \
        'stratum_v2.host="127.0.0.1"' "pool.data_dir=\"$WORK/data-sv2-$kind\""
    say "submit throughput, V1 and Stratum V2 (standard, extended) on one pool, $kind shares"
    start_pool "sv2-$kind" "$WORK/sv2-$kind.toml" "$PORT"
    for url in "stratum+tcp://127.0.0.1:$PORT" "stratum2+tcp://127.0.0.1:$SV2_PORT"; do
        channels=(standard)
        [[ $url == stratum2* ]] && channels=(standard extended)
        for channel in "${channels[@]}"; do
            name=$([[ $url == stratum2* ]] && echo "sv2-$channel" || echo v1)
            bench submit --url "$url" --sv2-channel "$channel" --pool-pid "$POOL_PID" \
                --chain main "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --miners 200 \
                --window 8 "${valid[@]}" --label "$name beside SV2, $kind shares" \
                --out "$OUT/submit-$kind-$name.json"
        done
    done
    stop_pool
done

if [ -n "$WORKERS" ]; then
    PORT=$(free_port)
    write_config "$WORK/submit-workers.toml" "${fake_node_config[@]}" "${STRATUM_COMMON[@]}" \
        "stratum.port=$PORT" "stratum.workers=$WORKERS" \
        "pool.data_dir=\"$WORK/data-submit-workers\""
    if has_workers "$WORK/submit-workers.toml"; then
        say "submit throughput, random nonces, solopool with [stratum] workers = $WORKERS"
        start_pool "submit-workers$WORKERS" "$WORK/submit-workers.toml" "$PORT"
        bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
            --chain main "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --client-procs 1 \
            --label "workers=$WORKERS, random nonces, 1 client proc" \
            --out "$OUT/submit-random-1proc-workers$WORKERS.json"
        bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
            --chain main "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --client-procs 2 \
            --label "workers=$WORKERS, random nonces, 2 client procs" \
            --out "$OUT/submit-random-2proc-workers$WORKERS.json"
        bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
            --chain main "${FAKE_NODE[@]}" --seconds "$SUBMIT_SECONDS" --miners 1000 \
            --window 1 --label "workers=$WORKERS, random nonces, no pipelining" \
            --out "$OUT/submit-random-window1-workers$WORKERS.json"
        stop_pool
    else
        say "skipping the workers=$WORKERS runs: this solopool has no [stratum] workers"
        WORKERS=""
    fi
fi
kill -TERM "$FAKE_PID" 2>/dev/null || true
wait "$FAKE_PID" 2>/dev/null || true

# --- the machine's own limits (no solopool) ------------------------------------------------------
# The echo pool answers with canned lines and checks nothing: what the client and the kernel
# allow any pool here. The send floor: one plain send() per loopback miner waiting in epoll.
PORT=$(free_port)
say "the machine's ceiling: the same submit runs against an echo pool (canned answers)"
"$BENCH" echo-pool --template "$TEMPLATE" --port "$PORT" --max-seconds 600 \
    >"$OUT/logs/echo-pool.log" 2>&1 &
POOL_PID=$!
POOL_PORT=$PORT
pids+=("$POOL_PID")
wait_port "$PORT" "the echo pool"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    --seconds "$SUBMIT_SECONDS" --client-procs 1 \
    --label "echo pool, 1 client proc" --out "$OUT/submit-random-1proc-echo.json"
bench submit --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" --chain main \
    --seconds "$SUBMIT_SECONDS" --miners 1000 --window 1 \
    --label "echo pool, no pipelining" --out "$OUT/submit-random-window1-echo.json"
stop_pool
say "the fan-out floor: plain send() to loopback miners"
bench send-floor --miners 5000 --out "$OUT/send-floor.json"

# --- 2. a regtest node with ZMQ -------------------------------------------------------------------
RPC_PORT=$(free_port)
P2P_PORT=$(free_port)
ZMQ_PORT=$(free_port)
mkdir -p "$WORK/node"
NODE_ARGS=(-regtest "-datadir=$WORK/node" -rpcuser=bench -rpcpassword=bench "-rpcport=$RPC_PORT")
say "starting bitcoind -regtest ($("$bitcoind" --version | head -n 1))"
"$bitcoind" "${NODE_ARGS[@]}" "-port=$P2P_PORT" -server -listen=0 -printtoconsole=0 \
    -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcthreads=32 -rpcworkqueue=4096 \
    "-zmqpubhashblock=tcp://127.0.0.1:$ZMQ_PORT" -fallbackfee=0.0002 -daemon=0 \
    >"$OUT/logs/bitcoind.log" 2>&1 &
pids+=($!)
wait_port "$RPC_PORT" "bitcoind"
NODE_RPC=(--node-rpc "http://127.0.0.1:$RPC_PORT" --node-user bench --node-password bench)
for _ in $(seq 1 100); do
    "$PY" -c "from solopool_tools.bench.rpc import RPCClient as R; R('http://127.0.0.1:$RPC_PORT', 'bench', 'bench').call('generatetoaddress', 1, 'bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080')" \
        >/dev/null 2>&1 && break
    sleep 0.2
done
regtest_config=(
    "node.rpc_url=\"http://127.0.0.1:$RPC_PORT\"" 'node.rpc_user="bench"'
    'node.rpc_password="bench"' 'node.poll_seconds=30'
)

PORT=$(free_port)
write_config "$WORK/zmq.toml" "${regtest_config[@]}" \
    "node.zmq_hashblock=\"tcp://127.0.0.1:$ZMQ_PORT\"" "${STRATUM_COMMON[@]}" \
    "stratum.port=$PORT" "pool.data_dir=\"$WORK/data-zmq\""
say "connections ($CONNECTIONS idle, authorized) and fan-out with ZMQ"
start_pool zmq "$WORK/zmq.toml" "$PORT"
bench connections --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
    --chain regtest --miners "$CONNECTIONS" --hold 5 --label "zmq pool" \
    --out "$OUT/connections.json"
bench fanout --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" "${NODE_RPC[@]}" \
    --miners "$FANOUT_MINERS" --blocks "$BLOCKS" --label "pool on ZMQ" \
    --out "$OUT/fanout-zmq.json"
bench fanout --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" "${NODE_RPC[@]}" \
    --miners "${FANOUT_MINERS%%,*}" --addresses "${FANOUT_MINERS%%,*}" --blocks "$BLOCKS" \
    --label "pool on ZMQ, one address per miner" --out "$OUT/fanout-zmq-addresses.json"
stop_pool

if [ -n "$WORKERS" ]; then
    PORT=$(free_port)
    write_config "$WORK/zmq-workers.toml" "${regtest_config[@]}" \
        "node.zmq_hashblock=\"tcp://127.0.0.1:$ZMQ_PORT\"" "${STRATUM_COMMON[@]}" \
        "stratum.port=$PORT" "stratum.workers=$WORKERS" "pool.data_dir=\"$WORK/data-zmq-workers\""
    if has_workers "$WORK/zmq-workers.toml"; then
        say "connections and fan-out with ZMQ, solopool with [stratum] workers = $WORKERS"
        start_pool "zmq-workers$WORKERS" "$WORK/zmq-workers.toml" "$PORT"
        bench connections --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
            --chain regtest --miners "$CONNECTIONS" --hold 5 \
            --label "zmq pool, workers=$WORKERS" --out "$OUT/connections-workers$WORKERS.json"
        bench fanout --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" \
            "${NODE_RPC[@]}" --miners "$FANOUT_MINERS" --blocks "$BLOCKS" \
            --label "pool on ZMQ, workers=$WORKERS" --out "$OUT/fanout-zmq-workers$WORKERS.json"
        stop_pool
    else
        say "skipping the workers=$WORKERS runs: this solopool has no [stratum] workers"
    fi
fi

# --- 3. the same node, the pool on longpoll --------------------------------------------------------
PORT=$(free_port)
write_config "$WORK/longpoll.toml" "${regtest_config[@]}" "${STRATUM_COMMON[@]}" \
    "stratum.port=$PORT" "pool.data_dir=\"$WORK/data-longpoll\""
say "fan-out with longpoll (no ZMQ in the pool; the bench still times from ZMQ)"
start_pool longpoll "$WORK/longpoll.toml" "$PORT"
bench fanout --url "stratum+tcp://127.0.0.1:$PORT" --pool-pid "$POOL_PID" "${NODE_RPC[@]}" \
    --miners "$FANOUT_MINERS" --blocks "$BLOCKS" --label "pool on longpoll" \
    --out "$OUT/fanout-longpoll.json"
stop_pool

say "results (JSON in $OUT)"
# Each single-process run followed by its workers=N counterpart (when there is one).
results=()
for name in submit-random-1proc submit-random-2proc submit-random-window1 submit-valid-1proc \
    submit-random-v1 submit-random-sv2-standard submit-random-sv2-extended \
    submit-valid-v1 submit-valid-sv2-standard submit-valid-sv2-extended connections fanout-zmq fanout-longpoll fanout-zmq-addresses fanout-mainnet-template \
    send-floor; do
    for file in "$OUT/$name.json" "$OUT/$name-workers${WORKERS:-0}.json" "$OUT/$name-echo.json"; do
        if [ -f "$file" ]; then results+=("$file"); fi
    done
done
if [ ${#results[@]} -eq 0 ]; then
    echo "bench: no results" >&2
    exit 1
fi
"$BENCH" report "${results[@]}" --out "$OUT/all.json"

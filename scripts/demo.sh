#!/usr/bin/env bash
# End-to-end demo on regtest: node -> solopool -> solopool-miner -> 3 blocks paid to the miner.
# Starts everything it needs and stops it all again. Works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO="$ROOT/.demo"
BLOCKS=${DEMO_BLOCKS:-3}

say() { printf '\n== %s\n' "$*"; }

# 1. solopool and its tools (solopool-miner) in a virtualenv
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e . >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./tools >/dev/null

# 2. a bitcoind: $BITCOIND, else PATH, else our private Bitcoin Knots install
if [ -n "${BITCOIND:-}" ]; then
    bitcoind=$BITCOIND
elif command -v bitcoind >/dev/null 2>&1; then
    bitcoind=$(command -v bitcoind)
else
    say "installing a regtest node (scripts/install-node.sh)"
    bitcoind=$(scripts/install-node.sh | tail -n 1)
fi
bitcoin_cli=${BITCOIN_CLI:-$(dirname "$bitcoind")/bitcoin-cli}

# 3. a fresh regtest node with the RPC login config/regtest.toml expects
rm -rf "$DEMO"
mkdir -p "$DEMO/node"
NODE_ARGS=(-regtest "-datadir=$DEMO/node" -rpcuser=solopool -rpcpassword=solopool -rpcport=18443)
cli() { "$bitcoin_cli" "${NODE_ARGS[@]}" "$@"; }

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    cli stop >/dev/null 2>&1 || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

say "starting bitcoind -regtest ($("$bitcoind" --version | head -n 1))"
"$bitcoind" "${NODE_ARGS[@]}" -server -listen=0 -fallbackfee=0.0002 -printtoconsole=0 \
    -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -daemon=0 &
pids+=($!)
for _ in $(seq 1 100); do cli getblockcount >/dev/null 2>&1 && break; sleep 0.2; done
cli createwallet demo >/dev/null
cli generatetoaddress 101 "$(cli getnewaddress "" bech32)" >/dev/null
echo "node at height $(cli getblockcount)"

# 4. the pool
say "starting solopool --config config/regtest.toml"
.venv/bin/solopool --config config/regtest.toml >"$DEMO/pool.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/3333) 2>/dev/null && break
    sleep 0.2
done

# 5. the miner, paid to a fresh wallet address
address=$(cli getnewaddress "" bech32)
say "mining with solopool-miner to $address until $BLOCKS blocks are found"
.venv/bin/solopool-miner --url stratum+tcp://127.0.0.1:3333 --user "$address.demo" \
    --blocks "$BLOCKS" --seconds 50 | tee "$DEMO/miner.log"

# 6. what the node says
say "blocks found, as the node sees them"
sleep 1
found=0
for hash in $(awk '$1 == "block" { print $2 }' "$DEMO/miner.log"); do
    confirmations=$(cli getblockheader "$hash" | awk -F': ' '/"confirmations"/ { gsub(",", "", $2); print $2 }')
    height=$(cli getblockheader "$hash" | awk -F': ' '/"height"/ { gsub(",", "", $2); print $2 }')
    if [ "${confirmations:-0}" -ge 1 ] && [ "$(cli getblockhash "$height")" = "$hash" ]; then
        echo "height $height  $hash  in best chain ($confirmations confirmations)"
        found=$((found + 1))
    else
        echo "height ${height:-?}  $hash  NOT in the best chain"
    fi
done
received=$(cli getreceivedbyaddress "$address" 1 true)
echo "paid to $address (immature coinbase included): $received BTC"
if command -v curl >/dev/null 2>&1; then
    echo "the pool's own record (http://127.0.0.1:8080/api/blocks, the dashboard is at /):"
    curl -s http://127.0.0.1:8080/api/blocks | head -c 600; echo
fi
if [ "$found" -lt "$BLOCKS" ]; then
    echo "demo failed: $found of $BLOCKS blocks in the best chain; see $DEMO/pool.log" >&2
    exit 1
fi
say "done: $found blocks, all paying $address"

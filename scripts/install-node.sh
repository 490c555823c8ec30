#!/usr/bin/env bash
# Install a Bitcoin node (Bitcoin Knots from Debian unstable) for regtest use.
#
# Debian stable ships no Bitcoin Core, but Debian unstable ships Bitcoin Knots
# (same RPC and consensus rules). Its binaries need a newer glibc/libstdc++
# than stable has, so we:
#   1. fetch bitcoin-knots + libc6 + libstdc++6 + libgcc-s1 from unstable with
#      a *private* apt configuration (the system's apt state is never touched),
#   2. unpack them with `dpkg -x` into the prefix,
#   3. install the remaining (ABI-stable) libraries from the system's own
#      sources with apt-get install,
#   4. write wrappers that start the binaries through unstable's dynamic
#      loader with unstable's libraries first on the library path.
#
# Usage: scripts/install-node.sh        (prints the path of bitcoind)
# Env:   SOLOPOOL_NODE_PREFIX   install prefix (default: <repo>/.node)
#        SOLOPOOL_DEBIAN_MIRROR mirror URI override (default: read from the
#                               system's apt sources)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${SOLOPOOL_NODE_PREFIX:-"$repo_dir/.node"}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

log() { printf 'install-node: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- fast path
if [[ -x "$prefix/bin/bitcoind" ]] && "$prefix/bin/bitcoind" --version >/dev/null 2>&1; then
    log "already installed: $("$prefix/bin/bitcoind" --version | head -n1)"
    printf '%s\n' "$prefix/bin/bitcoind"
    exit 0
fi

# ------------------------------------------------------------ architecture
arch=$(dpkg --print-architecture)
case "$arch" in
    amd64) triplet=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2 ;;
    arm64) triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture: $arch" ;;
esac

# ------------------------------------------------------ mirror and keyring
default_keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${SOLOPOOL_DEBIAN_MIRROR:-}
keyring=""
deb822=/etc/apt/sources.list.d/debian.sources
if [[ -z "$mirror" && -r "$deb822" ]]; then
    # First URI of the first `URIs:` line (preferring a non-security one).
    mirror=$(awk 'tolower($1) == "uris:" && $2 !~ /-security\/?$/ { print $2; exit }' "$deb822")
    if [[ -z "$mirror" ]]; then
        mirror=$(awk 'tolower($1) == "uris:" { print $2; exit }' "$deb822")
    fi
    keyring=$(awk 'tolower($1) == "signed-by:" && $2 ~ /^\// { print $2; exit }' "$deb822")
fi
if [[ -z "$mirror" && -r /etc/apt/sources.list ]]; then
    # deb [opts] URI suite components...
    mirror=$(awk '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (i <= NF && $i !~ /-security\/?$/) { print $i; exit }
        }' /etc/apt/sources.list)
    keyring=$(sed -n 's/.*signed-by=\([^] ]*\).*/\1/p' /etc/apt/sources.list | head -n1)
fi
[[ -n "$mirror" ]] || die "could not determine a Debian mirror from the apt sources; set SOLOPOOL_DEBIAN_MIRROR"
[[ -n "$keyring" && -r "$keyring" ]] || keyring=$default_keyring
[[ -r "$keyring" ]] || die "keyring $keyring not found (install debian-archive-keyring)"
log "using mirror $mirror (suite sid), keyring $keyring"

# ---------------------------------------------------- private apt settings
aptdir="$prefix/apt"
rm -rf "$aptdir"
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/debs" "$aptdir/preferences.d"
printf 'deb [signed-by=%s] %s sid main\n' "$keyring" "$mirror" >"$aptdir/sources.list"

private_opts=(
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$aptdir/preferences.d"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"
    -o "APT::Get::List-Cleanup=false"
)

log "fetching package lists of unstable (private apt state in $aptdir)"
apt-get -q "${private_opts[@]}" update >&2

log "downloading bitcoin-knots, libc6, libstdc++6, libgcc-s1 from unstable"
(cd "$aptdir/debs" && apt-get -q "${private_opts[@]}" download \
    bitcoin-knots libc6 libstdc++6 libgcc-s1 >&2)

for deb in "$aptdir"/debs/*.deb; do
    log "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$prefix"
done
[[ -x "$prefix/usr/bin/bitcoind" ]] || die "bitcoind not found in the bitcoin-knots package"
[[ -e "$prefix/usr/lib/$triplet/$loader" ]] || die "loader $loader not found in the libc6 package"

# --------------------------------------------- stable runtime libraries
stable_pkgs=(libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 libzmq5 libsqlite3-0)
missing=()
for p in "${stable_pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo -E)
    fi
    install_cmd=("${sudo[@]}" apt-get -q -y --no-install-recommends
        -o DPkg::Lock::Timeout=120 install "${missing[@]}")
    log "installing from the system's sources: ${missing[*]}"
    if ! "${install_cmd[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        "${sudo[@]}" apt-get -q -o DPkg::Lock::Timeout=120 update >&2
        "${install_cmd[@]}" >&2
    fi
fi

# ------------------------------------------------------------- wrappers
libpath="$prefix/usr/lib/$triplet:/lib/$triplet:/usr/lib/$triplet"
mkdir -p "$prefix/bin"
for name in bitcoind bitcoin-cli bitcoin-wallet bitcoin-tx bitcoin-util; do
    [[ -x "$prefix/usr/bin/$name" ]] || continue
    wrapper="$prefix/bin/$name"
    {
        printf '#!/usr/bin/env bash\n'
        printf '# Generated by scripts/install-node.sh: run %s with the bundled glibc.\n' "$name"
        printf 'exec %q --library-path %q --argv0 %q %q "$@"\n' \
            "$prefix/usr/lib/$triplet/$loader" "$libpath" "$name" "$prefix/usr/bin/$name"
    } >"$wrapper.tmp"
    chmod 755 "$wrapper.tmp"
    mv -f "$wrapper.tmp" "$wrapper"
done

# Private apt state is no longer needed (keep the sources list for reference).
rm -rf "$aptdir/lists" "$aptdir/cache" "$aptdir/debs" "$aptdir/preferences.d"

version=$("$prefix/bin/bitcoind" --version 2>&1 | head -n1) \
    || die "bitcoind does not start: $version"
"$prefix/bin/bitcoin-cli" --version >/dev/null 2>&1 || die "bitcoin-cli does not start"
log "installed: $version"
printf '%s\n' "$prefix/bin/bitcoind"

# shellcheck shell=bash
# Shared helpers for scripts/lab and scripts/test. Source it; it defines functions only
# (plus REPO, the repository's root).
#
# Everything here is idempotent: "ensure_X" installs or starts X only when it is missing.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export REPO

# ----- messages (all on stderr, so that stdout stays for results)

say() { echo "${SCRIPT_NAME:-flinger}: $*" >&2; }
warn() { echo "${SCRIPT_NAME:-flinger}: warning: $*" >&2; }
die() { echo "${SCRIPT_NAME:-flinger}: error: $*" >&2; exit 1; }

# ----- small predicates

have() { command -v "$1" >/dev/null 2>&1; }

# Exit 0 if something accepts TCP connections on HOST PORT.
port_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Exit 0 if PID is a live process (zombies count as gone).
pid_alive() { [[ -n ${1:-} && $(ps -o stat= -p "$1" 2>/dev/null) =~ ^[^Z] ]]; }

# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.5 s until it succeeds;
# returns 1 (after saying so) if it still fails after SECONDS.
wait_until() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      warn "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# random_token N: N random letters and digits (safe in a URL, an .env file and a shell word),
# for generated passwords and keys.
random_token() {
  local out=""
  while ((${#out} < $1)); do
    out+=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  done
  echo "${out:0:$1}"
}

# ----- packages

APT_UPDATED=
apt_install() {
  have apt-get || die "cannot install $*: no apt-get here; install them by hand"
  [[ $(id -u) == 0 ]] || die "installing $* needs root (apt-get); run as root or install them first"
  if [[ -z $APT_UPDATED ]]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ensure_commands CMD[:PACKAGE]...: installs the Debian package of each missing command.
ensure_commands() {
  local spec cmd pkg missing=()
  for spec in "$@"; do
    cmd=${spec%%:*}
    pkg=${spec#*:}
    have "$cmd" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

# ----- Rust

# The oldest Rust that builds the workspace (Cargo.toml's rust-version; uuid needs 1.89).
RUST_MIN=1.89

# Makes cargo reachable (rustup puts it in ~/.cargo/bin, which a bare environment may not have
# on PATH); installs Rust with rustup when it is missing, and updates a rustup toolchain older
# than RUST_MIN. Debian's own cargo package is too old for this workspace.
ensure_cargo() {
  local cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
  if ! have cargo && [[ -x $cargo_bin/cargo ]]; then
    export PATH="$cargo_bin:$PATH"
  fi
  if ! have cargo; then
    ensure_commands curl:curl update-ca-certificates:ca-certificates
    say "installing Rust (stable, minimal profile) with rustup"
    if ! curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy >&2; then
      die "cannot install Rust with rustup (no access to static.rust-lang.org?); install Rust $RUST_MIN or newer (https://www.rust-lang.org/tools/install) and run this again"
    fi
    export PATH="$cargo_bin:$PATH"
  fi
  local version
  version=$(cargo --version | awk '{print $2}')
  if ! printf '%s\n%s\n' "$RUST_MIN" "${version%%-*}" | sort -V -C; then
    if have rustup; then
      say "Rust $version is older than $RUST_MIN; rustup update stable"
      rustup update stable >&2 || die "rustup update failed; Flinger needs Rust $RUST_MIN or newer"
    else
      die "Rust $version is older than $RUST_MIN (Debian's cargo package is); install a newer one with rustup"
    fi
  fi
}

# ----- RabbitMQ (no systemd here: started with `rabbitmq-server -detached`)

RABBIT_HOST=127.0.0.1
RABBIT_PORT=5672

rabbit_starting() { pgrep -u rabbitmq beam.smp >/dev/null 2>&1; }

ensure_rabbitmq() {
  if ! have rabbitmq-server && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
    apt_install rabbitmq-server
  fi
  export PATH="$PATH:/usr/sbin:/usr/lib/rabbitmq/bin"
  if port_answers "$RABBIT_HOST" "$RABBIT_PORT"; then return; fi
  if rabbit_starting; then
    say "RabbitMQ is starting; waiting for it"
  else
    say "starting RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached >&2 || warn "rabbitmq-server -detached exited non-zero; waiting for the port anyway"
  fi
  timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  wait_until 60 "RabbitMQ on $RABBIT_HOST:$RABBIT_PORT" port_answers "$RABBIT_HOST" "$RABBIT_PORT" ||
    die "RabbitMQ does not answer on $RABBIT_HOST:$RABBIT_PORT; see /var/log/rabbitmq/"
  say "RabbitMQ is up on $RABBIT_HOST:$RABBIT_PORT"
}

# ----- the MongoDB stand-in (scripts/mongo-standin)

export STANDIN=$REPO/scripts/mongo-standin/standin

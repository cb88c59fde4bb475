# shellcheck shell=bash
# Shared helpers for scripts/*. Source it; it defines functions only.
# Each script sets SCRIPT (its name) before sourcing, for messages.

# die MESSAGE...: one line on stderr, exit 1.
die() {
  echo "${SCRIPT:-c10m}: $*" >&2
  exit 1
}

# require_root WHAT: exit with a one-line hint unless running as root.
require_root() {
  [[ $(id -u) -eq 0 ]] || die "$1 needs root: run it as root (or with sudo)"
}

# require_tools TOOL...: exit naming the missing tools and the script that installs them.
require_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run scripts/bootstrap"
}

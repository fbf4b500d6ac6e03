# Shared set-up for scripts/test and scripts/demo (sourced, not run).

# Debian's tmux: the terminal `sluice status --watch`'s live view is tested in (installed like prometheus).
ensure_tmux() {
  command -v tmux >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing tmux (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
  else
    echo "== tmux is not installed and cannot be installed from here: apt-get install tmux" >&2
  fi
}

# Debian's prometheus, installed when missing and we may (root with apt-get).
ensure_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "== prometheus is not installed and cannot be installed from here: apt-get install prometheus" >&2
  fi
}

# .venv with Sluice installed (editable) with the given extras, e.g. "[dev]", and the sandbox
# (./sandbox, the sluice-sandbox distribution: `sluice sandbox`, `sluice demo`, the tests' API
# server); then activated.
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  echo "== installing sluice$1 and sluice-sandbox"
  pip install -q --disable-pip-version-check -e ".$1" -e ./sandbox
}

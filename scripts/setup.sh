# Shared set-up for scripts/test and scripts/demo (sourced, not run).

# Debian packages whose command is missing, installed when we may (root with apt-get), in one
# apt-get run; the package and its command share the name. Without them, the tests that need one
# skip and say why (in CI, CI=true, they fail instead).
ensure_debian_packages() {
  local missing=()
  for name in "$@"; do
    command -v "$name" >/dev/null 2>&1 || missing+=("$name")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== not installed, and cannot be installed from here: apt-get install ${missing[*]}" >&2
  fi
}

# Debian's prometheus: the real Prometheus of the sandbox, the demo and the tests.
ensure_prometheus() {
  ensure_debian_packages prometheus
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

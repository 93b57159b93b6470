# Sourced by scripts/serve and scripts/test: make (or reuse) the project's virtualenv and
# install the package into it, editable, with the extras named in $1 (may be empty).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AIOSVC_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
extras="${1:-}"
stamp="$VENV/.installed${extras:+-$extras}"
# Reinstall only when the dependency list changed since the last install.
if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --editable "$ROOT${extras:+[$extras]}"
    touch "$stamp"
fi

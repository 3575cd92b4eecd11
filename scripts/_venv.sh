# Sourced by the other scripts: make (once) and activate the project's virtual environment
# with the given extras installed, on any machine that has Python 3.11+.
# Usage: . scripts/_venv.sh EXTRAS      (e.g. "fast", "test,fast", "dev")
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${1:-fast}"
_python="${PYTHON:-python3}"
"$_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "mtlsauth needs Python 3.11 or newer ($_python is $("$_python" --version 2>&1))" >&2
    exit 1
}
if [ ! -x "$_root/.venv/bin/python" ]; then
    echo "creating $_root/.venv" >&2
    "$_python" -m venv "$_root/.venv"
fi
# shellcheck disable=SC1091
. "$_root/.venv/bin/activate"
# Re-install only when pyproject.toml changed or no install so far had all of these extras.
_hash="$(sha256sum "$_root/pyproject.toml" | cut -c1-16)"
_stamp="$_root/.venv/.mtlsauth-$(echo "$_extras" | tr ',' '-')-$_hash"
_satisfied=""
for _done in "$_root"/.venv/.mtlsauth-*-"$_hash"; do
    [ -f "$_done" ] || continue
    _have="$(basename "$_done" | sed "s/^.mtlsauth-//; s/-$_hash\$//")"
    _ok=1
    for _want in $(echo "$_extras" | tr ',' ' '); do
        case "-$_have-" in *"-$_want-"*) ;; *) _ok="" ;; esac
    done
    if [ -n "$_ok" ]; then _satisfied=1; break; fi
done
if [ -z "$_satisfied" ]; then
    echo "installing mtlsauth[$_extras] into .venv (log: .venv/install.log)" >&2
    if ! { python -m pip install --disable-pip-version-check --upgrade pip &&
           python -m pip install --disable-pip-version-check -e "$_root[$_extras]"; } \
           >"$_root/.venv/install.log" 2>&1; then
        tail -n 30 "$_root/.venv/install.log" >&2
        echo "installing mtlsauth[$_extras] failed; the full log is .venv/install.log" >&2
        exit 1
    fi
    touch "$_stamp"
fi

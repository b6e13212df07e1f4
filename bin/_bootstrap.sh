# Shared by bin/nexo and bin/test: make sure .venv exists, is built from the
# current setup.cfg/pyproject.toml with the wanted extras, then return.
# Sourced, not executed. A stamp file records what the venv was built from so
# a changed dependency list rebuilds it; an flock keeps two concurrent first
# runs from building the same venv at once.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.nexo-stamp"

find_python() {
    local candidate
    for candidate in "${NEXO_PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "nexo: no Python >= 3.11 found on PATH (tried python3, python3.13, python3.12, python3.11); install one or set NEXO_PYTHON" >&2
    return 1
}

wanted_stamp() {
    # What the venv must have been built from: the package metadata and the
    # build system (tool settings in pyproject.toml do not need a reinstall).
    { cat "$ROOT/setup.cfg"; sed -n '/^\[build-system\]/,/^\[/p' "$ROOT/pyproject.toml"; } \
        | sha256sum | cut -d' ' -f1
}

venv_ok() {
    local extras="$1"
    [ -x "$VENV/bin/python" ] || return 1
    [ -f "$STAMP" ] || return 1
    "$VENV/bin/python" -c 'import sys' 2>/dev/null || return 1
    [ "$(sed -n 1p "$STAMP")" = "$(wanted_stamp)" ] || return 1
    # A venv built with the test extras also serves plain bin/nexo.
    if [ -n "$extras" ]; then
        [ "$(sed -n 2p "$STAMP")" = "$extras" ] || return 1
    fi
    return 0
}

ensure_venv() {
    local extras="$1"
    venv_ok "$extras" && return 0
    exec 9>"$ROOT/.venv.lock"
    flock 9
    if ! venv_ok "$extras"; then
        local py
        py="$(find_python)" || exit 1
        if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
            echo "nexo: creating $VENV with $("$py" --version 2>&1) (first run)..." >&2
            rm -rf "$VENV"
            "$py" -m venv "$VENV"
        fi
        # Keep extras an earlier install added: bin/nexo must not strip the
        # test tools out from under a running bin/test.
        if [ -z "$extras" ] && [ -f "$STAMP" ]; then
            extras="$(sed -n 2p "$STAMP")"
        fi
        echo "nexo: installing nexo_actors${extras:+[$extras]} into $VENV..." >&2
        local target="$ROOT"
        [ -n "$extras" ] && target="$ROOT[$extras]"
        # pip's own chatter goes to a log; it is shown only when the install fails.
        if ! "$VENV/bin/python" -m pip install -e "$target" >"$VENV/pip-install.log" 2>&1; then
            tail -n 40 "$VENV/pip-install.log" >&2
            echo "nexo: installing the package into $VENV failed (full log: $VENV/pip-install.log)" >&2
            exit 1
        fi
        printf '%s\n%s\n' "$(wanted_stamp)" "$extras" >"$STAMP"
    fi
    flock -u 9
    exec 9>&-
}

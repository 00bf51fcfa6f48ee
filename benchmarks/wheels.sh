# Sourced by the prepared accelerator scripts: `parse_wheels_args NAME "$@"` installs the wheels of `--wheels DIR`
# (pip --no-index --no-deps into a private folder put on PYTHONPATH, for an offline machine) and leaves the other
# arguments in the array `args`; then jaxse runs from this checkout (PYTHONPATH) and the jax line is printed.
parse_wheels_args() {
    local name="$1"
    shift
    args=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --wheels)
                [[ $# -ge 2 && -d "$2" ]] || { echo "$name: error: --wheels needs a folder of wheels" >&2; exit 2; }
                local site="${TMPDIR:-/tmp}/jaxse-check-site"
                python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$2"/*.whl
                export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
                shift 2;;
            *) args+=("$1"); shift;;
        esac
    done
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    PY="${PYTHON:-python3}"
    "$PY" -c "import jax; print('jax', jax.__version__, 'on', jax.default_backend(), jax.devices())"
}

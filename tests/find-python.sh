#!/usr/bin/env bash
# Prints the path of a Python X.Y interpreter that runs, for the ends of the supported range
# (run.sh test-range's oldest end, tests/bench/run.sh's BENCH_PYTHON=X.Y):
#
#   bash tests/find-python.sh 3.10 [VARIABLE]
#
# Looks, in this order, at pythonX.Y on PATH, then at pyenv's versions/X.Y.* (newest first;
# `pyenv root`, else $PYENV_ROOT or ~/.pyenv when pyenv itself is not on PATH). Each candidate
# is run: a pyenv shim on PATH for a version pyenv has not selected exists but fails. Prints the
# interpreter's real path (sys.executable, not the shim). Finding none, it fails, naming
# VARIABLE as the way to give one.
set -euo pipefail
want=${1:?usage: find-python.sh X.Y [VARIABLE]}
variable=${2:-}

candidates=()
if command -v "python$want" > /dev/null 2>&1; then
    candidates+=("$(command -v "python$want")")
fi
if command -v pyenv > /dev/null 2>&1; then
    pyenv_root=$(pyenv root)
else
    pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
fi
while IFS= read -r path; do
    [ -n "$path" ] && candidates+=("$path")
done < <(compgen -G "$pyenv_root/versions/$want.*/bin/python$want" | sort -rV)

for candidate in ${candidates[@]+"${candidates[@]}"}; do
    # The version it reports, not the one its name promises.
    if real=$("$candidate" -c "import sys
if sys.version_info[:2] == tuple(int(n) for n in '$want'.split('.')):
    print(sys.executable)" 2> /dev/null) && [ -n "$real" ]; then
        echo "$real"
        exit 0
    fi
done
{
    echo "find-python.sh: no Python $want found (looked for python$want on PATH and in $pyenv_root/versions/$want.*)."
    if [ -n "$variable" ]; then
        echo "Give one with $variable=/path/to/python$want, put python$want on PATH, or install it (pyenv install $want)."
    else
        echo "Put python$want on PATH or install it (pyenv install $want)."
    fi
} >&2
exit 1

"""``install.sh`` of a runtime bundle with wheels: the POSIX sh script that installs Runyard
from the ``wheels/`` beside it with no network (``pip install --no-index --require-hashes``).

``render_install_sh`` fills in the version, the target interpreter and machine, and the
hash-pinned requirements ``wheels.install_script`` works out.
"""

from __future__ import annotations

from .wheel_lock import Target

__all__ = ["render_install_sh"]


def render_install_sh(version: str, target: Target, requirements: list[str]) -> bytes:
    """The text of install.sh for Runyard ``version`` on ``target``, pinning ``requirements``."""
    text = (
        _SCRIPT.replace("@VERSION@", version)
        .replace("@PY@", f"{target.version[0]}.{target.version[1]}")
        .replace("@MACHINE@", target.machine)
        .replace("@REQUIREMENTS@", "\n".join(sorted(requirements)))
    )
    return text.encode("utf-8")


_SCRIPT = r"""#!/bin/sh
# install.sh: install Runyard @VERSION@ from the wheels beside this script, with no network.
#
#   sh install.sh [--venv DIR | DIR] [--wheels DIR] [--python PYTHON]
#
# Makes a virtual environment (default: venv/ beside this script) with PYTHON (default: $PYTHON,
# else python3; it must be CPython @PY@ on @MACHINE@ Linux, the wheels are built for it), then
# installs exactly the pinned wheels of wheels/, each checked against its sha256:
#   pip install --no-index --find-links wheels --require-hashes --only-binary=:all:
# pip never reaches the network: --no-index, PIP_NO_INDEX=1, every other PIP_* setting and pip
# config file ignored, no version check, no cache.
set -eu

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
venv=
wheels=$here/wheels
python=${PYTHON:-python3}

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            sed -n '2,11s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        --venv | --wheels | --python)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --venv) venv=$2 ;;
                --wheels) wheels=$2 ;;
                --python) python=$2 ;;
            esac
            shift 2
            ;;
        --venv=*) venv=${1#--venv=}; shift ;;
        --wheels=*) wheels=${1#--wheels=}; shift ;;
        --python=*) python=${1#--python=}; shift ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$venv" ] || die "one venv directory only (got $venv and $1)"
            venv=$1
            shift
            ;;
    esac
done
[ -n "$venv" ] || venv=$here/venv
case $venv in /*) ;; *) venv=$(pwd -P)/$venv ;; esac
case $wheels in /*) ;; *) wheels=$(pwd -P)/$wheels ;; esac

[ -d "$wheels" ] || die "no wheels directory at $wheels"
set -- "$wheels"/runyard-@VERSION@-*.whl
[ -f "$1" ] || die "no runyard @VERSION@ wheel in $wheels"

# Nothing from the caller's pip setup applies: no index, no find-links or constraint URL, no
# --user or --target, no config file. Then pip is told, three ways, to stay offline.
for name in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$name"
done
unset PYTHONPATH PYTHONHOME
PIP_CONFIG_FILE=/dev/null
PIP_NO_INDEX=1
PIP_DISABLE_PIP_VERSION_CHECK=1
PIP_NO_INPUT=1
export PIP_CONFIG_FILE PIP_NO_INDEX PIP_DISABLE_PIP_VERSION_CHECK PIP_NO_INPUT

fits() {
    "$1" -c 'import platform, sys
ok = (sys.implementation.name, "%d.%d" % sys.version_info[:2], platform.machine())
sys.exit(ok != ("cpython", "@PY@", "@MACHINE@"))' 2>/dev/null
}
describe() {
    "$1" -c 'import platform; print(platform.python_implementation(), platform.python_version(),
"on", platform.machine())' 2>/dev/null || echo "not runnable"
}

if [ -x "$venv/bin/python" ]; then
    fits "$venv/bin/python" ||
        die "$venv has $(describe "$venv/bin/python"); the wheels need CPython @PY@ on @MACHINE@"
else
    command -v "$python" >/dev/null 2>&1 || die "$python not found: install CPython @PY@ or pass --python"
    fits "$python" || die "$python is $(describe "$python"); the wheels need CPython @PY@ on @MACHINE@"
    "$python" -m venv "$venv" ||
        die "could not make a venv at $venv (on Debian or Ubuntu: apt install python3-venv)"
fi

cat >"$venv/runyard-requirements.txt" <<'EOF'
@REQUIREMENTS@
EOF

"$venv/bin/python" -m pip install --no-index --find-links "$wheels" --require-hashes \
    --only-binary=:all: --no-cache-dir --disable-pip-version-check --no-input --quiet \
    -r "$venv/runyard-requirements.txt" ||
    die "pip could not install runyard @VERSION@ from $wheels (see above)"
printf '%s\n' "$wheels" >"$venv/runyard-wheelhouse"
"$venv/bin/runyard" --help >/dev/null || die "installed, but $venv/bin/runyard does not start"

echo "runyard @VERSION@ is installed in $venv"
parent=$(dirname -- "$here")
if [ "$(basename -- "$parent")" = versions ] && [ -e "$(dirname -- "$parent")/current" ]; then
    # this script is PREFIX/versions/V/install.sh of an installed bundle
    echo "  run it:            RUNYARD_ROOT=$(dirname -- "$parent")/current $venv/bin/runyard up"
else
    echo "  install a bundle:  $venv/bin/runyard bundle install BUNDLE --prefix PREFIX"
    echo "  run it:            RUNYARD_ROOT=PREFIX/current $venv/bin/runyard up"
fi
echo "  (or put $venv/bin on PATH)"
"""

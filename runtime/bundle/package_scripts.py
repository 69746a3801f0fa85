"""The shell text of system packages and the self-extracting installer (system_package.py,
selfextract.py): the verify+install script, the maintainer scripts, the conffile.

What a .deb or .rpm of a runtime bundle ships (docs/BUNDLES.md, "System packages"):

    /usr/lib/runyard/NAME/bundle.tar.gz   the signed runtime bundle, as packed
    /usr/lib/runyard/NAME/bundle.pub      the public key it must be signed by (the packer's)
    /usr/lib/runyard/NAME/setup.sh        verify + install: `runyard bundle install`
    /etc/runyard/packages/NAME.conf       conffile: which runyard, which trusted key

The tree itself is installed by the maintainer script (postinst configure, rpm %post) through
``runyard bundle install BUNDLE --prefix /opt/runyard/NAME --pubkey KEY``: the one code path
that checks the signature before extracting, every member against the signed digests as it is
written, and switches ``current`` last. So a package upgrade keeps the old version beside the
new one (``bundle rollback`` works), and a failed verification fails the script with
``current`` untouched. Placeholders are ``@NAME@``-style, as in install_sh.py.
"""

from __future__ import annotations

import re

__all__ = [
    "CONFFILE",
    "DEB_POSTINST",
    "DEB_POSTRM",
    "LIB_DIR",
    "OPT_DIR",
    "RPM_POST",
    "RPM_POSTUN",
    "RUN_HEADER",
    "SETUP_SH",
    "fill",
]

LIB_DIR = "/usr/lib/runyard"
OPT_DIR = "/opt/runyard"
CONF_DIR = "/etc/runyard/packages"


def fill(template: str, **values: str) -> str:
    """``template`` with every ``@KEY@`` replaced by ``values[key.lower()]``."""
    for key, value in values.items():
        template = template.replace(f"@{key.upper()}@", value)
    leftover = re.findall(r"@[A-Z0-9_]+@", template)
    if leftover:
        raise ValueError(f"unfilled placeholders: {sorted(set(leftover))}")
    return template


#: Finds the runyard command: $RUNYARD, else the conffile's RUNYARD, else PATH (+/usr/local).
#: ``$how`` says where the script takes another one from (the .run reads no conffile).
_FIND_RUNYARD = r"""
find_runyard() {
    if [ -n "${1:-}" ]; then
        [ -x "$1" ] || die "RUNYARD=$1 is not an executable"
        echo "$1"
        return
    fi
    found=$(PATH=$PATH:/usr/local/bin:/usr/local/sbin command -v runyard 2>/dev/null || true)
    [ -n "$found" ] || die "runyard is not installed: install it first (pip install runyard, or a" \
        "bundle packed --with-wheels: sh install.sh), or $how"
    echo "$found"
}
"""

CONFFILE = """\
# Settings of the install script of the @NAME@ package (/usr/lib/runyard/@NAME@/setup.sh).
# Kept when the package is removed, deleted when it is purged. A variable set in the
# environment of the package manager wins over this file (RUNYARD, RUNYARD_PUBKEY).
#
# RUNYARD: the runyard command that verifies and installs the bundle (default: runyard on PATH).
#RUNYARD=/usr/local/bin/runyard
#
# PUBKEY: the Ed25519 public key (runyard keys gen: PREFIX.pub) the bundle must be signed by.
# Default: /usr/lib/runyard/@NAME@/bundle.pub, the packer's key shipped in the package; pin
# your own release key here to trust the bundle independently of the package.
#PUBKEY=/etc/runyard/keys/release.pub
"""

SETUP_SH = (
    r"""#!/bin/sh
# Verify the runtime bundle of the @NAME@ package (@VERSION@) and install it into
# /opt/runyard/@NAME@ with `runyard bundle install`: the signature is checked against PUBKEY
# before anything is extracted, every member against its signed sha256 as it is written, and
# `current` is switched only after all of that passed. Any failure exits non-zero and leaves
# `current` as it was. Settings: /etc/runyard/packages/@NAME@.conf.
set -eu
name=@NAME@
lib=/usr/lib/runyard/$name
prefix=/opt/runyard/$name
conf=/etc/runyard/packages/$name.conf
how="set RUNYARD=/path/to/runyard in $conf"

die() {
    printf '%s: %s\n' "$name" "$*" >&2
    exit 1
}
"""
    + _FIND_RUNYARD
    + r"""
env_runyard=${RUNYARD:-}
env_pubkey=${RUNYARD_PUBKEY:-}
RUNYARD=
PUBKEY=
if [ -r "$conf" ]; then
    . "$conf"
fi
runyard=$(find_runyard "${env_runyard:-$RUNYARD}")
pubkey=${env_pubkey:-${PUBKEY:-$lib/bundle.pub}}
[ -r "$pubkey" ] || die "no public key at $pubkey (PUBKEY in $conf)"
"$runyard" bundle install "$lib/bundle.tar.gz" --prefix "$prefix" --pubkey "$pubkey" ||
    die "the bundle was not installed; /opt/runyard/$name/current is unchanged"
"""
)

DEB_POSTINST = """\
#!/bin/sh
# Install the bundle (verify, extract beside the other versions, switch `current`).
set -e
case "$1" in
    configure)
        /usr/lib/runyard/@NAME@/setup.sh
        ;;
esac
exit 0
"""

#: The program side of the prefix goes on remove; its state (data logs cache temp
#: config/runyard) only on purge. Nothing on upgrade: the new postinst switches.
DEB_POSTRM = """\
#!/bin/sh
set -e
prefix=/opt/runyard/@NAME@
case "$1" in
    remove)
        rm -rf "$prefix/versions" "$prefix/current" "$prefix/previous"
        ;;
    purge)
        rm -rf "$prefix"
        rmdir /opt/runyard 2>/dev/null || true
        ;;
esac
exit 0
"""

RPM_POST = """\
/usr/lib/runyard/@NAME@/setup.sh
"""

#: $1 is the number of versions left: 0 is an erase (rpm has no purge: the state stays).
RPM_POSTUN = """\
if [ "$1" = 0 ]; then
    prefix=/opt/runyard/@NAME@
    rm -rf "$prefix/versions" "$prefix/current" "$prefix/previous"
fi
"""

RUN_HEADER = (
    r"""#!/bin/sh
# @NAME@ @VERSION@: a self-extracting installer of a signed Runyard runtime bundle.
#
#   sh @NAME@-@VERSION@.run [--prefix DIR] [--pubkey KEY] [--runyard PATH] [--quiet]
#                            [--service-install] [--extract FILE]
#
# Checks the embedded bundle's sha256, then `runyard bundle install` into DIR (default
# /opt/runyard/@NAME@): the signature is checked against KEY (default: the packer's key,
# embedded) before anything is extracted, and `current` is switched last. Non-interactive.
# --quiet: errors only. --service-install then runs `runyard service install` for DIR/current
# (unit @NAME@.service).
# --extract FILE only writes the embedded bundle to FILE (and KEY beside it as FILE.pub).
set -eu
name=@NAME@
payload_size=@SIZE@
payload_sha256=@SHA256@
how="give --runyard /path/to/runyard"

die() {
    printf '%s: %s\n' "$name" "$*" >&2
    exit 1
}
"""
    + _FIND_RUNYARD
    + r"""
prefix=/opt/runyard/$name
pubkey=
runyard_arg=${RUNYARD:-}
service=
extract=
quiet=
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --prefix | --pubkey | --runyard | --extract)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --prefix) prefix=$2 ;;
                --pubkey) pubkey=$2 ;;
                --runyard) runyard_arg=$2 ;;
                --extract) extract=$2 ;;
            esac
            shift 2
            ;;
        --service-install) service=1; shift ;;
        --quiet) quiet=1; shift ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
tail -c "$payload_size" "$0" >"$work/bundle.tar.gz"
got=$(sha256sum "$work/bundle.tar.gz" | cut -d' ' -f1)
[ "$got" = "$payload_sha256" ] || die "the embedded bundle is damaged (sha256 $got, expected $payload_sha256)"
cat >"$work/bundle.pub" <<'EOF'
@PUBKEY@EOF
if [ -n "$extract" ]; then
    cp "$work/bundle.tar.gz" "$extract"
    cp "$work/bundle.pub" "$extract.pub"
    exit 0
fi
[ -n "$pubkey" ] || pubkey=$work/bundle.pub
runyard=$(find_runyard "$runyard_arg")
if [ -n "$quiet" ]; then exec 3>/dev/null; else exec 3>&1; fi
"$runyard" bundle install "$work/bundle.tar.gz" --prefix "$prefix" --pubkey "$pubkey" >&3 ||
    die "the bundle was not installed; $prefix/current is unchanged"
if [ -n "$service" ]; then
    "$runyard" service install --root "$prefix/current" --name "$name" >&3 ||
        die "installed in $prefix, but the service could not be installed"
fi
exit 0
# The bundle (a .tar.gz of @SIZE@ bytes) follows this line to the end of the file.
"""
)

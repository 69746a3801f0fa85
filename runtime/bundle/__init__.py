"""Runtime bundles: a tree packed into one deterministic, signed file that installs offline.

    from runyard.runtime.bundle import pack_bundle, verify_bundle_file, install_bundle, rollback

    pack_bundle(tree, "rt-1.4.0.tar.gz", version="1.4.0", sign_key="release.key")
    verify_bundle_file("rt-1.4.0.tar.gz", pubkey="release.pub").ok
    install_bundle("rt-1.4.0.tar.gz", "/opt/rt", pubkey="release.pub")  # -> /opt/rt/current
    rollback("/opt/rt")

Modules (one concept each; docs/BUNDLES.md describes the format):

    layout    member names, modes, formats, errors     secrets   what counts as a secret
    collect   members of a tree, hashed and scanned    writer    deterministic tar.gz / zip
    signing   the manifest signature                   pack      pack_bundle
    reader    one sequential pass over a bundle file   plan      members vs the manifest
    verify    verify_bundle_file                       prefix    versions/, current, previous
    unpack    members into a dir, checked as they go   install   install_bundle, rollback
    wheels    --with-wheels wheelhouse
    packages  pack_package: --format deb|rpm|run       package_scripts  their shell text
    system_package  .deb/.rpm (nFPM, dpkg-deb)         selfextract  the .run installer
"""

from __future__ import annotations

from .install import InstallResult, decide_action, install_bundle, rollback
from .layout import BundleError, Finding, SecretsFound
from .pack import PackResult, pack_bundle
from .packages import pack_package
from .prefix import Prefix
from .verify import BundleReport, Check, verify_bundle_file

__all__ = [
    "BundleError",
    "BundleReport",
    "Check",
    "Finding",
    "InstallResult",
    "PackResult",
    "Prefix",
    "SecretsFound",
    "decide_action",
    "install_bundle",
    "pack_bundle",
    "pack_package",
    "rollback",
    "verify_bundle_file",
]

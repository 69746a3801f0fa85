#!/usr/bin/python
"""runyard.fleet.bundle: a signed runtime bundle installed on a box, or a prefix rolled back.

Runs on the box and drives the box's own ``runyard`` command (``bundle verify``, ``bundle
install``, ``bundle rollback``, all with ``--json``): the module holds no bundle logic of its
own, so a box installs exactly as an operator typing the commands would, with the same checks,
lock and audit record. It reads only the ``current`` and ``previous`` links itself. Needs only
the standard library on the box.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bundle
short_description: Install a signed Runyard runtime bundle into a prefix, or roll it back
description:
  - Verifies a runtime bundle file that is already on the box (C(runyard bundle verify)), then
    installs it into O(prefix) (C(runyard bundle install)), which switches C(PREFIX/current)
    atomically and keeps the version it replaced as C(PREFIX/previous).
  - Reports changed only when the version current in O(prefix) is not the bundle's version, so
    a second run with the same bundle changes nothing.
  - With O(state=rolled_back), makes C(previous) current again (C(runyard bundle rollback)),
    only while O(version) is current, so running it twice rolls back once.
  - The module never talks to the daemon; run C(runyard reload) afterwards (the
    runyard.fleet.rollout role does, and waits for C(runyard health)).
version_added: "0.1.0"
author: Runyard maintainers
options:
  src:
    description:
      - Path of the bundle file on the box. Required with O(state=present).
    type: path
  prefix:
    description: The install prefix (C(PREFIX/versions/), C(PREFIX/current)).
    type: path
    required: true
  pubkey:
    description:
      - Path on the box of the Ed25519 public key the bundle must be signed by.
      - Without it a signed bundle is only checked to be self-consistent; give it in production.
    type: path
  pubkey_content:
    description:
      - The same key as its PEM text (C(lookup('file', 'release.pub')) on the controller), so
        no key file has to be copied first; it is written to a temporary file on the box for
        the command and removed after. Mutually exclusive with O(pubkey).
    type: str
  state:
    description: C(present) installs O(src); C(rolled_back) switches back to the previous version.
    type: str
    choices: [present, rolled_back]
    default: present
  version:
    description:
      - With O(state=rolled_back), the version to roll away from (the one that failed); nothing
        is done when another version is current.
    type: str
  migrate:
    description: Allow a major version upgrade (C(--migrate)).
    type: bool
    default: false
  force:
    description: Allow a downgrade or a replacement of an installed version (C(--force)).
    type: bool
    default: false
  runyard:
    description: The runyard command on the box, split like a shell would.
    type: str
    default: runyard
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Install a release
  runyard.fleet.bundle:
    src: /opt/runyard/web/incoming/rt-1.4.0.tar.gz
    prefix: /opt/runyard/web
    pubkey: /opt/runyard/web/incoming/release.pub

- name: Roll back 1.4.0 if it is still current
  runyard.fleet.bundle:
    prefix: /opt/runyard/web
    state: rolled_back
    version: 1.4.0
"""

RETURN = r"""
version:
  description: The version current after the task (in check mode, the one that would be).
  type: str
  returned: success
previous:
  description: The version that was current before the task (null on a first install).
  type: str
  returned: success
action:
  description: >-
    What happened: install, upgrade, downgrade, reinstall, switch, unchanged or rollback
    (from C(runyard bundle install --json)); in check mode C(would-install) or C(would-rollback).
  type: str
  returned: success
signature:
  description: How the signature was checked (valid, self-consistent, unsigned).
  type: str
  returned: when a bundle was verified
"""

import contextlib  # noqa: E402 (Ansible modules keep their documentation first)
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


class RunyardFailed(Exception):
    """A runyard command failed; the text is its own one-line reason."""


def run_json(module, argv):
    """Run ``runyard ARGV --json`` and decode its stdout; RunyardFailed with its reason."""
    command = shlex.split(module.params["runyard"]) + list(argv) + ["--json"]
    if os.sep not in command[0] and module.get_bin_path(command[0]) is None:
        raise RunyardFailed(f"{command[0]}: not found on the box's PATH (set the runyard option)")
    rc, out, err = module.run_command(command, environ_update={"LC_ALL": "C.UTF-8"})
    data = None
    if out.strip():
        try:
            data = json.loads(out)
        except ValueError:
            data = None
    if rc != 0:
        raise RunyardFailed(_reason(command, rc, data, err))
    if data is None:
        raise RunyardFailed(f"{' '.join(command)}: no JSON on stdout")
    return data


def _reason(command, rc, data, err):
    """One line: runyard's own stderr line, or the failed checks of a verify report."""
    if isinstance(data, dict) and isinstance(data.get("checks"), list):
        failed = [f"{c['name']}: {c['detail']}" for c in data["checks"] if not c.get("ok")]
        if failed:
            return f"bundle verify failed: {'; '.join(failed)}"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"{' '.join(command)} exited {rc}"


def installed(prefix):
    """(current, previous) versions of the prefix, None when there is none.

    Read from the two links of the documented layout (``current -> versions/X``, docs/
    BUNDLES.md) rather than ``runyard bundle ls``: one process less on every run, and an
    unchanged box is the common case. ``previous`` equal to ``current`` means none.
    """

    def link(name):
        try:
            target = os.readlink(os.path.join(prefix, name))
        except OSError:
            return None
        return target[len("versions/") :] if target.startswith("versions/") else None

    current, previous = link("current"), link("previous")
    return current, (previous if previous != current else None)


def ensure_present(module):
    p = module.params
    prefix, src = p["prefix"], p["src"]
    current, _ = installed(prefix)
    if not os.path.isfile(src):
        if module.check_mode:  # the copy before us did not run: what it would copy is new
            result = _result(current, None, "would-install", True, f"would install {src}")
            result["diff"]["after"]["current"] = f"(the version of {os.path.basename(src)})"
            return result
        raise RunyardFailed(f"src: {src}: no such file on the box")
    verify = ["bundle", "verify", src] + (["--pubkey", p["pubkey"]] if p["pubkey"] else [])
    report = run_json(module, verify)
    version = report["version"]
    if version == current:
        result = _result(current, current, "unchanged", False, f"{version} is already current")
        result["signature"] = report.get("signature", "")
        return result
    if module.check_mode:
        result = _result(current, version, "would-install", True, f"would install {version}")
        result["signature"] = report.get("signature", "")
        return result
    argv = ["bundle", "install", src, "--prefix", prefix]
    argv += ["--pubkey", p["pubkey"]] if p["pubkey"] else []
    argv += ["--migrate"] if p["migrate"] else []
    argv += ["--force"] if p["force"] else []
    done = run_json(module, argv)
    changed = done["action"] != "unchanged"
    result = _result(current, done["version"], done["action"], changed, "")
    result["msg"] = f"{done['action']}: {done['version']} is now current in {prefix}"
    result["signature"] = done.get("signature", "")
    return result


def ensure_rolled_back(module):
    p = module.params
    prefix = p["prefix"]
    current, previous = installed(prefix)
    if p["version"] and current != p["version"]:
        what = f"{current} is current" if current else "nothing is installed"
        return _result(current, current, "unchanged", False, f"{what}, not {p['version']}")
    if previous is None:
        raise RunyardFailed(f"{prefix}: no previous version to roll back to")
    if module.check_mode:
        return _result(current, previous, "would-rollback", True, f"would roll back to {previous}")
    done = run_json(module, ["bundle", "rollback", "--prefix", prefix])
    msg = f"rolled back: {done['version']} is now current in {prefix} (was {current})"
    return _result(current, done["version"], "rollback", True, msg)


def _result(before, after, action, changed, msg):
    return {
        "changed": changed,
        "version": after,
        "previous": before,
        "action": action,
        "msg": msg,
        "diff": {"before": {"current": before}, "after": {"current": after}},
    }


@contextlib.contextmanager
def pubkey_file(module):
    """With ``pubkey_content``: the key in a temporary file, given as ``pubkey`` meanwhile."""
    text = module.params["pubkey_content"]
    if not text:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="runyard-pubkey-", suffix=".pub")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text.strip() + "\n")
        module.params["pubkey"] = path
        yield
    finally:
        os.unlink(path)


def main():
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path"},
            "prefix": {"type": "path", "required": True},
            "pubkey": {"type": "path"},
            "pubkey_content": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "rolled_back"]},
            "version": {"type": "str"},
            "migrate": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "runyard": {"type": "str", "default": "runyard"},
        },
        required_if=[("state", "present", ["src"])],
        mutually_exclusive=[("pubkey", "pubkey_content")],
        supports_check_mode=True,
    )
    try:
        with pubkey_file(module):
            if module.params["state"] == "present":
                result = ensure_present(module)
            else:
                result = ensure_rolled_back(module)
    except RunyardFailed as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()

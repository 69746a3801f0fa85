"""``runyard run | verify | replay | runs``: sealed engine runs (runtime/runs/).

``run`` asks the tree's daemon to execute and seal (``run`` operation) when one answers, and
otherwise (or with ``--local``) runs the same library call in this process: the sealed run is
the same either way. ``verify``, ``replay`` and ``runs`` work on the files, with no daemon needed.

``run ENGINE --input FILE.json``: FILE (``-`` for stdin) is a JSON object. When its members are
only ``inputs`` (an object), ``parameters`` and ``context``, it is a whole request (like
examples/engines/heat1d/sample-input.json); otherwise the object itself is the inputs.
``--param k=v`` sets ``parameters.k`` to v parsed as JSON when it is JSON (``3``, ``"1/4"``,
``[1,2]``, ``true``), else to the string v; ``--context k=v`` sets ``context.k`` to the string v.
``--project-id ID`` is the project id recorded in RUN_INPUT.json; the project file is
``--project-file`` there (or ``runyard --project FILE run ...``). ``run --project ID`` is the
old spelling of ``--project-id``: it still works, with a deprecation line on stderr, for one
release; then ``--project`` will mean the project file here too, as in every other command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused, RunError
from runyard.runtime.core.tree import RuntimeTree

from .common import UsageError, open_project, open_tree
from .output import print_json, print_table

if TYPE_CHECKING:
    from runyard.runtime.runs import RunRejected, RunResult

# runtime.runs (jsonschema, cryptography) is imported inside the commands: every `runyard`
# process, the daemon included, imports this module, and only these commands need it.

__all__ = ["register"]

_REQUEST_KEYS = {"inputs", "parameters", "context"}

RUN_HELP = """\
Execute ENGINE once and seal the run into
data/ENGINE/runs/RUN_ID/ of the tree; prints the run id and the run directory.
The tree's daemon executes it when one answers (--local: always this process).

--input FILE.json (- for stdin) is a JSON object: either a whole request with only
the members inputs (an object), parameters and context (like the engine's
sample-input.json), or the inputs themselves.
--param K=V sets parameters.K to V read as JSON when it is JSON (3, "1/4", [1,2],
true), else to the string V. --context K=V sets context.K to the string V; context
values under secret-looking keys are sealed as "[redacted]".
--project-id ID is the project id recorded in RUN_INPUT.json (the project file is
--project-file here, or `runyard --project FILE run ...`; `run --project ID` is the
deprecated spelling of --project-id).
Exit status: 0 sealed, 1 rejected (the reason on stderr) or failed, 2 usage."""

REPLAY_HELP = """\
Verify the sealed run RUN, re-execute its engine on the sealed RUN_INPUT.json and
demand byte-identical canonical RUN_OUTPUT.json; a mismatch shows each differing
JSON path with the original and the replayed value, and each differing artifact
with both sizes. Every replay is recorded under data/ENGINE/replays/.
--times N re-executes N times (1-100) and says whether the engine is deterministic
on this input: RUN_OUTPUT.json and every artifact byte-identical each time.
Exit status: 0 replayable (with --times: deterministic), 1 not, 2 usage."""


#: Said once per ``run --project ID``: the flag means the project file everywhere else.
DEPRECATED_PROJECT = (
    "runyard: warning: run --project ID is deprecated, use --project-id ID "
    "(--project names the project file in every other command)"
)


def _run_common() -> argparse.ArgumentParser:
    """The common options without ``--project`` (which ``run`` uses for the project id)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", default=argparse.SUPPRESS, help="runtime tree directory")
    p.add_argument(
        "--project-file",
        dest="project",
        default=argparse.SUPPRESS,
        help="project file (runyard.toml)",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks on errors"
    )
    return p


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    _register_run(sub)
    _register_checks(sub, common)


def _register_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        parents=[_run_common()],
        help="execute an engine and seal the run into its run directory",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("engine", metavar="ENGINE", help="an installed engine (runtime ensure)")
    p.add_argument("--input", required=True, metavar="FILE.json", help="inputs (- for stdin)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter")
    p.add_argument("--context", action="append", default=[], metavar="K=V", help="context")
    p.add_argument(
        "--project-id",
        dest="project_id",
        default="default",
        metavar="ID",
        help="project id recorded in RUN_INPUT.json (default: default)",
    )
    p.add_argument(
        "--project",
        dest="old_project_id",
        metavar="ID",
        help="deprecated: the old spelling of --project-id",
    )
    p.add_argument(
        "--from-run",
        action="append",
        default=[],
        metavar="RUN_ID[:PATH]",
        help="consume an upstream run's artifacts or RUN_OUTPUT.json (PATH: a glob or path)",
    )
    p.add_argument("--sign", metavar="KEY", help="Ed25519 private key (runyard keys gen)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument(
        "--local",
        action="store_true",
        help="run in this process even when a daemon runs (default: the daemon when it answers)",
    )
    p.set_defaults(handler=cmd_run)


def _register_checks(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help="check a sealed run")
    p.add_argument("run_dir", metavar="RUN", help="a sealed run directory or run id")
    p.add_argument("--pubkey", metavar="K", help="Ed25519 public key the run must be signed by")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser(
        "replay",
        parents=[common],
        help="re-execute a sealed run, demand identical bytes",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="a sealed run directory or run id")
    p.add_argument("--pubkey", metavar="K", help="Ed25519 public key the run must be signed by")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument(
        "--times",
        type=int,
        metavar="N",
        help="re-execute N times: exit 0 when every result is byte-identical (deterministic)",
    )
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser("runs", parents=[common], help="list sealed runs")
    p.add_argument("--engine", metavar="E", help="only this engine")
    p.add_argument("--rejected", action="store_true", help="also list rejected runs")
    p.set_defaults(handler=cmd_runs)


def _pairs(items: list[str], option: str, as_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        if as_json:
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out


def _read_input(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    try:
        if name == "-":
            data = sys.stdin.buffer.read(RUN_FILE + 1)
            if len(data) > RUN_FILE:
                raise UsageError(f"--input -: more than {RUN_FILE} bytes on stdin")
        else:
            data = read_capped(name, RUN_FILE)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), f"--input {name}") from None
    except FileRefused as exc:
        raise UsageError(f"--input {exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"--input {name}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--input {name}: expected a JSON object")
    if doc and set(doc) <= _REQUEST_KEYS and isinstance(doc.get("inputs"), dict):
        parts = [doc.get(k) or {} for k in ("inputs", "parameters", "context")]
        for key, part in zip(("inputs", "parameters", "context"), parts, strict=True):
            if not isinstance(part, dict):
                raise UsageError(f"--input {name}: {key} must be an object")
        return parts[0], parts[1], parts[2]
    return doc, {}, {}


def cmd_run(args: argparse.Namespace) -> int:
    from runyard.runtime.runs import RunRejected, execute_and_seal

    if args.old_project_id is not None:
        if args.project_id != "default" and args.project_id != args.old_project_id:
            raise UsageError("--project-id and the deprecated --project disagree: give one")
        print(DEPRECATED_PROJECT, file=sys.stderr)
        args.project_id = args.old_project_id
    inputs, params, context = _read_input(args.input)
    params.update(_pairs(args.param, "--param", as_json=True))
    context.update(_pairs(args.context, "--context", as_json=False))
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    project = open_project(args)
    tree = open_tree(args, project).require()
    if not args.local:
        routed = _run_via_daemon(args, tree, inputs, params, context)
        if routed is not None:
            return routed
    try:
        result = execute_and_seal(
            tree,
            args.engine,
            inputs,
            parameters=params,
            context=context,
            project_id=args.project_id,
            from_runs=args.from_run,
            sign_key=args.sign,
            timeout=args.timeout,
            project=project,
        )
    except RunRejected as rej:
        if args.json:
            print_json(_rejected_json(rej))
        raise
    _print_sealed(args, result)
    return 0


def _run_via_daemon(
    args: argparse.Namespace,
    tree: RuntimeTree,
    inputs: dict[str, Any],
    params: dict[str, Any],
    context: dict[str, Any],
) -> int | None:
    from runyard.runtime.runs import RunRejected, RunResult

    """Ask the tree's daemon to execute and seal; None when no daemon answers (the caller
    then runs in this process: the sealed run is the same either way)."""
    from runyard.protocol.client import Client, DaemonUnreachable

    try:
        with Client(tree.root, timeout=2.0) as client:
            client.hello()
            reply = client.run(
                args.engine,
                inputs,
                parameters=params,
                context=context,
                project_id=args.project_id,
                from_runs=args.from_run,
                sign_key=args.sign,
                run_timeout=args.timeout,
            )
    except DaemonUnreachable:
        # Said only with --debug: errors and results keep their one-line shape for scripts.
        if args.debug:
            print("runyard: no daemon answers; running in this process", file=sys.stderr)
        return None
    outcome = reply.result
    if reply.status == "rejected":
        rej = RunRejected(
            outcome.reason or "rejected",
            stage=outcome.stage,
            run_id=outcome.run_id,
            engine=outcome.engine,
            record=outcome.record,
        )
        if args.json:
            print_json(_rejected_json(rej))
        raise rej
    # The wire's outcome as the runtime's RunResult: fields matched by their Python name (the
    # wire sends run_dir as "bundle"), so the output is the same as a run in this process.
    _print_sealed(args, msgspec.convert(outcome, RunResult, from_attributes=True))
    return 0


def _rejected_json(rej: RunRejected) -> dict[str, Any]:
    return {
        "status": "rejected",
        "run_id": rej.run_id,
        "engine": rej.engine,
        "stage": rej.stage,
        "reason": rej.reason,
        "record": rej.record,
    }


def _print_sealed(args: argparse.Namespace, result: RunResult) -> None:
    if args.json:
        print_json(with_old_keys({"status": "sealed", **_builtins(result)}))
        return
    print(f"sealed {result.engine} run {result.run_id}")
    print(f"  run_dir       {result.run_dir}")
    print(f"  outputs_hash  {result.outputs_hash}")
    print(f"  files         {result.files} ({result.bytes} bytes), {result.duration:.3f} s")
    if result.signed_by:
        print(f"  signed by     {result.signed_by}")


#: ``--json`` keys from before a sealed run had its own name, and the key each stands for:
#: deprecated aliases, kept for older scripts (they read ``bundle``; new ones read ``run_dir``).
OLD_JSON_KEYS = {"bundle": "run_dir"}


def with_old_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (and a ``verify`` report nested in it) with each of ``OLD_JSON_KEYS`` beside the
    key it stands for, holding the same value."""
    out = dict(doc)
    for old, new in OLD_JSON_KEYS.items():
        if new in out:
            out[old] = out[new]
    if isinstance(out.get("verify"), dict):
        out["verify"] = with_old_keys(out["verify"])
    return out


def _builtins(value: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(value)
    return out


def _run_dir_arg(args: argparse.Namespace, text: str) -> tuple[Path, RuntimeTree | None]:
    from runyard.runtime.runs import find_run
    from runyard.runtime.runs.layout import RUN_ID_RE
    from runyard.runtime.runs.verify import guess_tree

    """A run directory given as a path, or as a run id of the tree."""
    path = Path(text)
    if path.is_dir():
        tree = open_tree(args, lenient=True).require() if args.root else guess_tree(path)
        return path, tree
    if RUN_ID_RE.match(text):
        tree = open_tree(args, lenient=True).require()  # a read: a broken runyard.toml warns
        return find_run(tree, text), tree
    # Not found is exit 1, as an unknown service is: the name is well formed, nothing has it.
    raise RunError(f"{text}: no such run directory (or run id)")


def cmd_verify(args: argparse.Namespace) -> int:
    from runyard.runtime.runs import verify_run

    path, tree = _run_dir_arg(args, args.run_dir)
    report = verify_run(path, args.pubkey, tree=tree)
    if args.json:
        print_json(with_old_keys(report.to_builtins()))
        return 0 if report.ok else 1
    for check in report.checks:
        state = "SKIPPED" if check.skipped else ("OK" if check.ok else "FAILED")
        print(f"{state:<8} {check.name:<16} {check.detail}")
    if report.ok:
        print(f"sealed run OK: {path}")
        return 0
    print(f"sealed run INVALID: {len(report.failed)} check(s) failed: {path}", file=sys.stderr)
    return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from runyard.runtime.runs import check_determinism, replay_run
    from runyard.runtime.runs.determinism import MAX_TIMES

    from .replay_view import print_determinism, print_replay

    path, tree = _run_dir_arg(args, args.run_dir)
    project = open_project(args)
    if tree is None:
        tree = open_tree(args, project).require()
    if args.times is not None:
        if not 1 <= args.times <= MAX_TIMES:
            raise UsageError(f"--times must be from 1 to {MAX_TIMES}, got {args.times}")
        checked = check_determinism(
            tree, path, args.times, pubkey=args.pubkey, timeout=args.timeout, project=project
        )
        if args.json:
            print_json(msgspec.to_builtins(checked))
            return 0 if checked.deterministic else 1
        return print_determinism(checked)
    report = replay_run(tree, path, pubkey=args.pubkey, timeout=args.timeout, project=project)
    if args.json:
        print_json(with_old_keys(report.to_builtins()))
        return 0 if report.replayable else 1
    return print_replay(report)


def cmd_runs(args: argparse.Namespace) -> int:
    from runyard.runtime.runs import list_runs

    tree = open_tree(args, lenient=True).require()
    runs = list_runs(tree, args.engine, include_rejected=args.rejected)
    if args.json:
        print_json(runs)
        return 0
    if not runs:
        print("no runs" + (f" of {args.engine}" if args.engine else ""))
        return 0
    rows = [
        (
            r.run_id,
            r.engine,
            r.engine_version,
            r.project_id or "-",
            r.status,
            f"{r.duration:.3f}" if r.duration is not None else "-",
            "yes" if r.signed else "-",
            r.reason[:60] if r.reason else "",
        )
        for r in runs
    ]
    print_table(
        ["RUN_ID", "ENGINE", "VERSION", "PROJECT", "STATUS", "SECONDS", "SIGNED", "REASON"],
        rows,
        {5},
    )
    return 0

"""One error tree: every exception Runyard defines lives in runtime/core/errors.py, under RunyardError,
and the tree drawn in that module's docstring is the tree the classes make."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import runyard.runtime.core.errors as errors_module
from runyard.daemon.fsm import IllegalTransition
from runyard.daemon.server import error_reply
from runyard.protocol import messages as m
from runyard.runtime.core.errors import (
    HandlerError,
    InvariantBroken,
    RunyardError,
    ShuttingDown,
    SupervisionError,
    UnknownService,
)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "protocol", "runtime", "schemas", "tui")
ERRORS_FILE = REPO / "runtime" / "core" / "errors.py"


def _modules() -> list[object]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(f"runyard.{name}")
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"runyard.{name}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the CLI when imported
                continue
            found.append(importlib.import_module(info.name))
    return found


def _defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined (not imported) at module level in the five packages."""
    found: dict[str, type[BaseException]] = {}
    for module in _modules():
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.removeprefix("runyard.").split(".")[0] in PACKAGES
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_is_defined_in_runtime_errors_under_runyard_error() -> None:
    exceptions = _defined_exceptions()
    assert len(exceptions) > 40, sorted(exceptions)  # the walk did find the tree
    elsewhere = sorted(
        name for name, cls in exceptions.items() if cls.__module__ != "runyard.runtime.core.errors"
    )
    assert not elsewhere, f"define these in runtime/core/errors.py: {elsewhere}"
    outside = sorted(name for name, cls in exceptions.items() if not issubclass(cls, RunyardError))
    assert not outside, f"derive these from RunyardError: {outside}"


def test_no_exception_class_is_defined_outside_runtime_errors_even_nested() -> None:
    """The import walk sees module-level classes; this sees a class in a function or a class,
    and in the modules the walk does not import (``__main__``)."""
    exception_names = {
        name
        for name, obj in vars(builtins).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    } | set(errors_module.__all__)
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == ERRORS_FILE:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ClassDef):
                    continue
                for base in node.bases:
                    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                    if name in exception_names:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not offenders, offenders


def _drawn_tree() -> dict[str, str | None]:
    """The docstring's drawing as {class: parent} (None for the root)."""
    doc = errors_module.__doc__ or ""
    lines = doc.split("\n\n")[1].splitlines()  # the first indented block after the title
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in lines:
        match = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?(\w+)\s", line + " ")
        assert match, f"not a tree line: {line!r}"
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        name = match.group(2)
        del stack[depth:]
        assert len(stack) == depth, f"{name}: drawn deeper than its parent"
        parents[name] = stack[-1] if stack else None
        stack.append(name)
    return parents


def _actual_tree() -> dict[str, str | None]:
    """The classes runtime.core.errors defines, each with its Runyard parent (first RunyardError base)."""
    actual: dict[str, str | None] = {}
    for obj in vars(errors_module).values():
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            if obj.__module__ != "runyard.runtime.core.errors":
                continue
            parent = next((b for b in obj.__bases__ if issubclass(b, RunyardError)), None)
            actual[obj.__name__] = parent.__name__ if parent else None
    return actual


def test_the_docstring_draws_exactly_the_classes_defined() -> None:
    drawn, actual = _drawn_tree(), _actual_tree()
    assert sorted(drawn) == sorted(actual), (
        f"drawn but not defined: {sorted(set(drawn) - set(actual))}; "
        f"defined but not drawn: {sorted(set(actual) - set(drawn))}"
    )
    assert drawn == actual  # and each under its real parent


def test_every_exported_name_is_defined_and_every_class_exported() -> None:
    exported = set(errors_module.__all__)
    assert {name for name in _actual_tree()} <= exported
    assert all(hasattr(errors_module, name) for name in exported)


def test_old_import_paths_still_give_the_same_classes() -> None:
    from runyard.daemon.cli.common import UsageError
    from runyard.daemon.handlers import HandlerError as handlers_error
    from runyard.daemon.order import ShuttingDown as order_shutting_down
    from runyard.protocol.client import ClientError, NotFound
    from runyard.protocol.endpoints import SocketDirError
    from runyard.runtime.bundle.layout import SHOWN_FINDINGS, BundleError, SecretsFound
    from runyard.runtime.config.supervision import SupervisionError as supervision_error
    from runyard.runtime.runs.jsonio import JSONInputError
    from runyard.runtime.runs.model import RunError, RunRejected
    from runyard.runtime.runs.sealing import SealedFileError

    assert handlers_error is HandlerError and order_shutting_down is ShuttingDown
    assert supervision_error is SupervisionError
    assert SHOWN_FINDINGS == errors_module.SHOWN_FINDINGS
    for cls in (UsageError, ClientError, NotFound, SocketDirError, BundleError, SecretsFound):
        assert cls.__module__ == "runyard.runtime.core.errors"
    for cls in (JSONInputError, RunError, RunRejected, SealedFileError):
        assert cls.__module__ == "runyard.runtime.core.errors"


@pytest.mark.parametrize(
    ("cls", "standard"),
    [
        ("SupervisionError", ValueError),
        ("JSONInputError", ValueError),
        ("SealedFileError", ValueError),
        ("SocketDirError", OSError),
        ("IllegalTransition", RuntimeError),
    ],
)
def test_callers_that_catch_a_standard_type_still_catch(cls: str, standard: type) -> None:
    assert issubclass(getattr(errors_module, cls), standard)


def test_unknown_service_reads_as_its_message_not_a_quoted_key() -> None:
    """It was a KeyError, whose str() quotes the message; its text on the wire is unchanged."""
    assert str(UnknownService("no service 'x' (services: a)")) == "no service 'x' (services: a)"


# --- the server's one answer to what a handler raised -------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (HandlerError(m.ErrorCode.BAD_REQUEST, "n must be >= 0"), m.ErrorCode.BAD_REQUEST),
        (UnknownService("no service 'x'"), m.ErrorCode.NOT_FOUND),
        (ShuttingDown("ensure: the daemon is shutting down"), m.ErrorCode.CONFLICT),
        (SupervisionError("'HUP2' is not a signal name"), m.ErrorCode.FAILED),
        (RunyardError("engine not installed"), m.ErrorCode.FAILED),
        (IllegalTransition("no transition from stopped on exited"), m.ErrorCode.INTERNAL),
        (KeyError("a bug"), m.ErrorCode.INTERNAL),
    ],
)
def test_error_reply_maps_each_branch_of_the_tree(exc: Exception, code: m.ErrorCode) -> None:
    reply = error_reply(exc)
    assert reply.code == code
    if code == m.ErrorCode.INTERNAL:
        assert reply.message.startswith(f"{type(exc).__name__}: ")
    else:
        assert reply.message == (exc.message if isinstance(exc, HandlerError) else str(exc))


def test_shutting_down_and_unknown_service_are_runyard_errors_yet_not_answered_failed() -> None:
    """Both joined the tree; the server still tells them from a refusal (``failed``)."""
    assert issubclass(ShuttingDown, RunyardError) and issubclass(UnknownService, RunyardError)
    assert issubclass(IllegalTransition, InvariantBroken)
    assert error_reply(ShuttingDown("x")).code == m.ErrorCode.CONFLICT


def test_a_handler_error_with_a_code_the_protocol_does_not_define_is_internal() -> None:
    reply = error_reply(HandlerError("no_such_code", "x"))
    assert reply.code == m.ErrorCode.INTERNAL
    assert reply.message == "HandlerError: x"


def test_runtime_errors_imports_nothing_of_runyard() -> None:
    """Every module imports it; an import back (even for typing) would be a cycle."""
    tree = ast.parse(ERRORS_FILE.read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {
        name for name in imported if name.removeprefix("runyard.").split(".")[0] in PACKAGES
    }, imported
    assert "runyard" not in imported, imported


# --- wire error codes are the ErrorCode enum, never bare strings --------------------------------


def _is_code(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "code") or (
        isinstance(node, ast.Name) and node.id == "code"
    )


def _bare_codes(path: Path) -> list[str]:
    """String constants equal to an ErrorCode value where a code goes: ``code=``, the first
    argument of an error class, either side of a comparison with ``.code``, a ``case``."""
    values = {code.value for code in m.ErrorCode}
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        suspects: list[ast.expr] = []
        if isinstance(node, ast.Call):
            suspects += [kw.value for kw in node.keywords if kw.arg == "code"]
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if node.args and (name in errors_module.__all__ or name == "remote_error"):
                suspects.append(node.args[0])
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_code(o) for o in operands):
                suspects += operands
        elif isinstance(node, ast.MatchValue):
            suspects.append(node.value)
        for s in suspects:
            if isinstance(s, ast.Constant) and s.value in values:
                found.append(f"{where}:{s.lineno} {s.value!r}")
    return found


def test_no_bare_error_code_literal_in_daemon_or_protocol() -> None:
    offenders = [
        hit
        for package in ("daemon", "protocol", "tui")
        for path in sorted((REPO / package).rglob("*.py"))
        for hit in _bare_codes(path)
    ]
    assert not offenders, f"use protocol.messages.ErrorCode: {offenders}"


def test_the_bare_code_scan_sees_each_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    sample = (
        'HandlerError("conflict", "x")\n'
        'ErrorReply(code="not_found", message="x")\n'
        'if reply.code == "failed": pass\n'
        'match exc.code:\n    case "internal": pass\n'
        'audit(result="failed")\n'  # an audit result, not a code: left alone
    )
    probe.write_text(sample)
    hits = _bare_codes(probe)
    assert [h.split(" ", 1)[1] for h in hits] == [
        "'conflict'",
        "'not_found'",
        "'failed'",
        "'internal'",
    ]


def test_remote_errors_cover_every_error_code() -> None:
    from runyard.protocol.errors import REMOTE_ERRORS

    assert set(REMOTE_ERRORS) == set(m.ErrorCode)
    assert len(set(REMOTE_ERRORS.values())) == len(m.ErrorCode)

"""A name means one thing across the repository: a class name is defined once in the five
packages, except the wire form of a runtime struct (``protocol/payloads.py``), which carries
the runtime struct's fields (``payloads.from_runtime`` matches them by name).

Regression: there were two ``NotFound`` (the daemon's unknown service, the client's not_found
reply), two ``RunEvent`` (the ``on_event`` record, the wire event), a doctor ``Check`` beside
the verification ``Check``, and two ``VerifyReport`` (an installed tree, a sealed run).

"Bundle" means a runtime bundle (``runtime/bundle/``, ``runyard bundle``) only: a sealed run is
a sealed run, its directory the run directory (``run_dir``), in code, CLI help and wire names
alike, but for the two deprecated aliases kept for older clients and scripts."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "protocol", "runtime", "schemas", "tui")
WIRE = "protocol/payloads.py"


def _module(path: str) -> str:
    return "runyard." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _class_definers() -> dict[str, list[str]]:
    definers: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    definers[node.name].append(rel)
    return definers


def test_each_class_name_is_defined_once_or_is_a_wire_mirror() -> None:
    twice = {name: paths for name, paths in _class_definers().items() if len(paths) > 1}
    not_mirrors = {
        name: paths
        for name, paths in twice.items()
        if len(paths) != 2 or WIRE not in paths or not any(p.startswith("runtime/") for p in paths)
    }
    assert not not_mirrors, f"one name, two concepts: {not_mirrors}"
    payloads = importlib.import_module(_module(WIRE))
    for name, paths in twice.items():
        (runtime_path,) = (p for p in paths if p != WIRE)
        wire = getattr(payloads, name)
        runtime_cls = getattr(importlib.import_module(_module(runtime_path)), name)
        runtime_names = set(getattr(runtime_cls, "__struct_fields__", ())) | set(dir(runtime_cls))
        assert set(wire.__struct_fields__) <= runtime_names, (
            f"{name}: the wire form has fields its runtime struct lacks"
        )


def test_the_duplicates_the_issue_named_are_gone() -> None:
    definers = _class_definers()
    assert definers["NotFound"] == ["runtime/core/errors.py"]
    assert definers["UnknownService"] == ["runtime/core/errors.py"]
    assert definers["RunEvent"] == ["protocol/messages.py"]
    assert definers["RunMilestone"] == ["runtime/runs/model.py"]
    assert sorted(definers["Check"]) == [WIRE, "runtime/core/checks.py"]
    assert definers["StartupCheck"] == ["runtime/ops/doctor.py"]
    assert sorted(definers["VerifyReport"]) == [WIRE, "runtime/runs/model.py"]
    assert definers["DriftReport"] == ["runtime/acquisition/drift.py"]


# --- "bundle" is a runtime bundle, never a sealed run --------------------------------------------

#: The code of sealed runs and of every caller that speaks of them (CLI, handlers, wire, TUI).
SEALED_RUN_CODE = (
    *(f"runtime/runs/{p.name}" for p in sorted((REPO / "runtime" / "runs").glob("*.py"))),
    *(f"protocol/{p.name}" for p in sorted((REPO / "protocol").glob("*.py"))),
    "daemon/cli/runs_cmd.py",
    *(f"daemon/handlers/{n}.py" for n in ("run", "verify", "replay", "runs_common", "runs_list")),
    "daemon/handlers/runs_show.py",
    "daemon/handlers/audited.py",
    "tui/runs_screen.py",
    "tui/bridge.py",
)
#: The only places the old word may stay, as a string: the deprecated aliases kept for older
#: clients (the wire key of ``run_dir``) and older scripts (the ``--json`` key).
OLD_WORD_ALIASES = {
    ("protocol/payloads.py", "RUN_DIR_WIRE_KEY"),
    ("daemon/cli/runs_cmd.py", "OLD_JSON_KEYS"),
}
#: "bundle" said of anything but a runtime bundle.
BARE_BUNDLE = re.compile(r"(?<!runtime )(?<!runtime-)\bbundle", re.IGNORECASE)


def _identifiers(tree: ast.AST) -> set[str]:
    """Names a module defines or uses: functions, classes, arguments, attributes, variables and
    keyword arguments."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return names


def _strings_outside_aliases(rel: str, tree: ast.AST) -> list[str]:
    """Every string constant of ``rel`` (docstrings and f-string parts too) but those assigned
    to one of ``OLD_WORD_ALIASES``."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and (rel, t.id) in OLD_WORD_ALIASES for t in targets):
                allowed |= {id(n) for n in ast.walk(node)}
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in allowed
    ]


def test_sealed_run_code_never_says_bundle() -> None:
    """Regression: "bundle" meant both a sealed run (verify_bundle, replay_bundle, RunResult.bundle,
    BundleFileError, "bundle OK") and a runtime bundle. Only the second keeps the word."""
    named, said = {}, {}
    for rel in SEALED_RUN_CODE:
        tree = ast.parse((REPO / rel).read_text(), rel)
        if found := sorted(n for n in _identifiers(tree) if "bundle" in n.lower()):
            named[rel] = found
        if found := [s for s in _strings_outside_aliases(rel, tree) if BARE_BUNDLE.search(s)]:
            said[rel] = found
    assert not named, f"identifiers that call a sealed run a bundle: {named}"
    assert not said, f"strings that say bundle for a sealed run: {said}"
    assert len(SEALED_RUN_CODE) > 20  # the globs found the packages


def test_the_deprecated_aliases_are_the_only_old_words_and_stay_bundle() -> None:
    from runyard.daemon.cli.runs_cmd import OLD_JSON_KEYS
    from runyard.protocol.payloads import RUN_DIR_WIRE_KEY

    assert RUN_DIR_WIRE_KEY == "bundle"  # older clients and daemons read this key
    assert OLD_JSON_KEYS == {"bundle": "run_dir"}  # older scripts read this key


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (its one-line help in ``runyard --help``, its parser)."""
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = {a.dest: a.help or "" for a in sub._choices_actions}
    return {name: (lines.get(name, ""), p) for name, p in sub.choices.items()}


def test_sealed_run_commands_help_says_sealed_run_and_bundle_says_runtime_bundle() -> None:
    from runyard.daemon.cli import build_parser

    commands = _subcommands(build_parser())
    for name in ("run", "verify", "replay", "runs"):
        line, parser = commands[name]
        text = f"{line}\n{parser.format_help()}"
        assert "bundle" not in text.lower(), f"runyard {name} --help: {text}"
    for name in ("verify", "replay"):
        usage = commands[name][1].format_usage()
        assert usage.rstrip().endswith("RUN"), usage
        assert "a sealed run directory or run id" in commands[name][1].format_help()
    line, bundle = commands["bundle"]
    assert line.startswith("runtime bundles")
    for sub_line, parser in _subcommands(bundle).values():
        text = " ".join(f"{sub_line} {parser.format_help()}".split())  # argparse wraps lines
        assert not BARE_BUNDLE.search(text.replace("runyard bundle", "")), text

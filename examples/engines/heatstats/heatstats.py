#!/usr/bin/env python3
"""heatstats: a deterministic downstream engine that summarises heat1d profiles exactly.

It never runs heat1d and never talks to it: the Runyard runtime routes the upstream artifacts
(``runyard run heatstats --from-run HEAT1D_RUN_ID``). Reads ONE JSON object from stdin, the
whole RUN_INPUT, and uses:

    input_artifact_index  [{run_id, engine_code, path, sha256}, ...], at least one entry; each
                          file is read from $RUNYARD_INPUTS_DIR/{sha256} and its sha256 checked
    inputs.column         the CSV column to summarise: "final_exact" (default), "final" or
                          "initial" (a heat1d profile.csv has all three)
    parameters.decimals   int 0..30, digits of the ``*_decimal`` values (default 6)

(``inputs`` and ``parameters`` are merged, ``inputs`` winning.) Every value is read as an
exact fraction ("7/2", "3.500"), so the statistics are exact: count, sum, mean, median, min,
max, range and population variance, per source file and combined, as fraction strings, plus
the mean and variance rounded half-even to ``decimals`` places.

Writes exactly one JSON object (sorted keys, one line) to stdout:

    {"metrics": {"files": 1, "values": 5}, "outputs": {"column": ..., "combined": {...},
     "sources": [{"path": ..., "run_id": ..., "sha256": ..., "stats": {...}}]}}

and, when $RUNYARD_ARTIFACTS_DIR is set, ``summary.csv`` there (one row per source and one
``combined`` row). Bad input: one line on stderr, exit status 2; unreadable or corrupt input
artifacts: exit status 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

__version__ = "1.0.0"

COLUMNS = ("final_exact", "final", "initial")
MAX_DECIMALS = 30
MAX_FILES = 100
MAX_BYTES = 16 * 1024 * 1024


class InputError(ValueError):
    """Bad run input (exit 2)."""


class ArtifactError(RuntimeError):
    """An input artifact is missing, corrupt or not a profile (exit 1)."""


def _no_constant(name: str) -> Any:
    raise InputError(f"input is not valid JSON: {name} is not a number")


def parse_run_input(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"), parse_float=Fraction, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InputError("input is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"input is not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise InputError("input must be a JSON object (RUN_INPUT)")
    return doc


def config_of(doc: dict[str, Any]) -> tuple[str, int, list[dict[str, Any]]]:
    merged: dict[str, Any] = {}
    for member in ("parameters", "inputs"):
        part = doc.get(member) or {}
        if not isinstance(part, dict):
            raise InputError(f"{member}: must be an object")
        merged.update(part)
    column = merged.get("column", "final_exact")
    if column not in COLUMNS:
        raise InputError(f"column: expected one of {', '.join(COLUMNS)}, got {column!r}")
    decimals = merged.get("decimals", 6)
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise InputError("decimals: expected an integer")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise InputError(f"decimals: expected 0..{MAX_DECIMALS}, got {decimals}")
    index = doc.get("input_artifact_index")
    if not isinstance(index, list) or not index:
        raise InputError(
            "input_artifact_index: heatstats needs at least one upstream profile "
            "(runyard run heatstats --from-run HEAT1D_RUN_ID)"
        )
    if len(index) > MAX_FILES:
        raise InputError(f"input_artifact_index: at most {MAX_FILES} files, got {len(index)}")
    for i, entry in enumerate(index):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("run_id", "path", "sha256")
        ):
            raise InputError(f"input_artifact_index[{i}]: expected {{run_id, path, sha256}}")
    return column, decimals, index


def read_artifact(entry: dict[str, Any]) -> bytes:
    folder = os.environ.get("RUNYARD_INPUTS_DIR")
    if not folder:
        raise ArtifactError("RUNYARD_INPUTS_DIR is not set (the runtime routes the inputs)")
    path = Path(folder) / entry["sha256"]
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ArtifactError(f"{entry['path']}: larger than {MAX_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{entry['path']}: cannot read {path}: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{entry['path']}: sha256 does not match input_artifact_index")
    return data


def column_values(data: bytes, column: str, where: str) -> list[Fraction]:
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ArtifactError(f"{where}: not a UTF-8 CSV file: {exc}") from None
    if not rows or column not in rows[0]:
        raise ArtifactError(f"{where}: no column {column!r} (is it a heat1d profile.csv?)")
    values = []
    for n, row in enumerate(rows, start=2):
        try:
            values.append(Fraction((row[column] or "").strip()))
        except (ValueError, ZeroDivisionError):
            raise ArtifactError(f"{where}: line {n}: {row[column]!r} is not a number") from None
    return values


def decimal_text(value: Fraction, places: int) -> str:
    scaled = round(value * 10**places)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


def stats(values: list[Fraction], decimals: int) -> dict[str, Any]:
    n = len(values)
    ordered = sorted(values)
    total = sum(values, Fraction(0))
    mean = total / n
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    variance = sum(((v - mean) ** 2 for v in values), Fraction(0)) / n
    return {
        "count": n,
        "max": str(ordered[-1]),
        "mean": str(mean),
        "mean_decimal": decimal_text(mean, decimals),
        "median": str(median),
        "min": str(ordered[0]),
        "range": str(ordered[-1] - ordered[0]),
        "sum": str(total),
        "variance": str(variance),
        "variance_decimal": decimal_text(variance, decimals),
    }


def summarise(doc: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    column, decimals, index = config_of(doc)
    sources = []
    everything: list[Fraction] = []
    for entry in index:
        where = f"{entry['run_id']}:{entry['path']}"
        values = column_values(read_artifact(entry), column, where)
        everything.extend(values)
        sources.append(
            {
                "path": entry["path"],
                "run_id": entry["run_id"],
                "sha256": entry["sha256"],
                "stats": stats(values, decimals),
            }
        )
    result = {
        "metrics": {"files": len(sources), "values": len(everything)},
        "outputs": {
            "column": column,
            "combined": stats(everything, decimals),
            "decimals": decimals,
            "sources": sources,
        },
    }
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = ["count", "sum", "mean", "median", "min", "max", "range", "variance"]
    writer.writerow(["source", *fields])
    for src in sources:
        writer.writerow([f"{src['run_id']}:{src['path']}", *(src["stats"][f] for f in fields)])
    writer.writerow(["combined", *(result["outputs"]["combined"][f] for f in fields)])
    return result, out.getvalue().encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sys.set_int_max_str_digits(0)
    if args in (["--version"], ["-V"]):
        print(f"heatstats {__version__}")
        return 0
    if args:
        print("usage: heatstats [--version] < RUN_INPUT.json", file=sys.stderr)
        return 2
    try:
        result, summary = summarise(parse_run_input(sys.stdin.buffer.read()))
    except InputError as exc:
        print(f"heatstats: error: {exc}", file=sys.stderr)
        return 2
    except ArtifactError as exc:
        print(f"heatstats: error: {exc}", file=sys.stderr)
        return 1
    artifacts = os.environ.get("RUNYARD_ARTIFACTS_DIR")
    if artifacts:
        try:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            (Path(artifacts) / "summary.csv").write_bytes(summary)
        except OSError as exc:
            print(f"heatstats: error: cannot write summary.csv: {exc.strerror}", file=sys.stderr)
            return 1
    sys.stdout.write(json.dumps(result, sort_keys=True, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

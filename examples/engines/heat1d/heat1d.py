#!/usr/bin/env python3
"""heat1d: a deterministic one-shot engine for the Runyard demo runtime.

Solves 1-D heat diffusion with the explicit scheme

    u[i] <- u[i] + alpha * (u[i-1] - 2*u[i] + u[i+1])

in exact rational arithmetic, so every run on every machine gives the same bytes.

Reads ONE JSON object from stdin: the whole RUN_INPUT. Its ``parameters`` and then its ``inputs``
members (both optional, objects; ``inputs`` wins) are merged; when neither is present the object
itself is read as the inputs. Recognised keys:

    cells     int, 3..1000           number of cells (default: the length of ``initial``)
    steps     int, 0..1000           time steps; cells * steps is at most 250,000
    alpha     "1/4", "0.25" or 0.25  diffusion number, 0 <= alpha <= 1/2 (stability), with a
                                     denominator of at most 2**20; default 1/4
    initial   list of numbers or exact strings ("7/2"), length ``cells``;
              default: all 0 with 100 in the middle cell
    boundary  "fixed" (ends keep their initial values, default) or "insulated" (no flux)
    decimals  int, 0..30            digits after the point in ``temperatures_decimal`` (default 6)

Other keys are ignored. JSON numbers are read exactly (0.1 is 1/10, not a binary float). The
limits keep the exact values printable: with alpha = p/q the denominators grow by q per step.

Writes exactly one JSON object (sorted keys, one line) to stdout:

    {"metrics": {...}, "outputs": {"temperatures": ["0", "7/2", ...], ...}}

Temperatures are exact fractions as strings, plus the same values rounded half-even to
``decimals`` places. When $RUNYARD_ARTIFACTS_DIR is set, ``profile.csv`` (cell, initial, final,
final_exact) is written there. Bad input: one line on stderr and exit status 2; an artifacts
dir that cannot be written: one line on stderr and exit status 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

__version__ = "1.0.0"

MAX_CELLS = 1000
MAX_STEPS = 1000
MAX_WORK = 250_000
MAX_ALPHA_DENOMINATOR = 2**20
MAX_DECIMALS = 30
BOUNDARIES = ("fixed", "insulated")


class InputError(ValueError):
    """The run input is not something heat1d can compute; the message is one line."""


def _reject_constant(name: str) -> Any:
    raise InputError(f"input is not valid JSON: {name} is not a number")


def parse_run_input(data: bytes) -> dict[str, Any]:
    """The merged configuration from RUN_INPUT bytes."""
    if not data.strip():
        raise InputError("no input on stdin (expected one JSON object)")
    try:
        doc = json.loads(
            data.decode("utf-8"), parse_float=Fraction, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise InputError("input is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"input is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise InputError(f"input must be a JSON object, got {_kind(doc)}")
    if "parameters" not in doc and "inputs" not in doc:
        return dict(doc)
    merged: dict[str, Any] = {}
    for member in ("parameters", "inputs"):
        part = doc.get(member)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise InputError(f"{member}: must be an object, got {_kind(part)}")
        merged.update(part)
    return merged


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, Fraction)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _exact(value: object, where: str) -> Fraction:
    """A JSON number or a string such as "7/2", "-0.25" or "1e-3" as an exact Fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, Fraction, str)):
        raise InputError(f'{where}: expected a number or a string like "1/4", got {_kind(value)}')
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise InputError(f"{where}: {value!r} is not an exact number") from None
    return Fraction(value)


def _int(config: dict[str, Any], key: str, low: int, high: int, default: int | None) -> int:
    value = config.get(key, default)
    if value is None:
        raise InputError(f"{key}: required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{key}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise InputError(f"{key}: expected {low}..{high}, got {value}")
    return value


class Problem:
    """A validated heat1d configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        raw_initial = config.get("initial")
        if raw_initial is not None and not isinstance(raw_initial, list):
            raise InputError(f"initial: expected an array, got {_kind(raw_initial)}")
        default_cells = len(raw_initial) if raw_initial is not None else None
        self.cells = _int(config, "cells", 3, MAX_CELLS, default_cells)
        self.steps = _int(config, "steps", 0, MAX_STEPS, None)
        if self.cells * self.steps > MAX_WORK:
            raise InputError(f"cells * steps: at most {MAX_WORK}, got {self.cells * self.steps}")
        self.alpha = _exact(config.get("alpha", "1/4"), "alpha")
        if not 0 <= self.alpha <= Fraction(1, 2):
            raise InputError(
                f"alpha: must be within 0..1/2 for a stable explicit scheme, got {self.alpha}"
            )
        if self.alpha.denominator > MAX_ALPHA_DENOMINATOR:
            raise InputError(
                f"alpha: the denominator of {self.alpha} is above 2**20; "
                "use a simpler fraction such as 1/4"
            )
        if raw_initial is None:
            self.initial = [Fraction(0)] * self.cells
            self.initial[self.cells // 2] = Fraction(100)
        else:
            if len(raw_initial) != self.cells:
                raise InputError(
                    f"initial: expected {self.cells} values (cells), got {len(raw_initial)}"
                )
            self.initial = [_exact(v, f"initial[{i}]") for i, v in enumerate(raw_initial)]
        self.boundary = config.get("boundary", "fixed")
        if self.boundary not in BOUNDARIES:
            raise InputError(
                f"boundary: expected one of {', '.join(BOUNDARIES)}, got {self.boundary!r}"
            )
        self.decimals = _int(config, "decimals", 0, MAX_DECIMALS, 6)


def simulate(initial: list[Fraction], alpha: Fraction, steps: int, boundary: str) -> list[Fraction]:
    """Run the explicit scheme exactly.

    Values are kept as integers over one common denominator ``den``; with alpha = p/q a step
    multiplies ``den`` by q and stays in integers, which is much faster than Fraction per cell.
    """
    den = math.lcm(*(v.denominator for v in initial))
    u = [v.numerator * (den // v.denominator) for v in initial]
    p, q = alpha.numerator, alpha.denominator
    last = len(u) - 1
    for _ in range(steps):
        new = [q * u[i] + p * (u[i - 1] - 2 * u[i] + u[i + 1]) for i in range(1, last)]
        if boundary == "fixed":
            first, end = q * u[0], q * u[last]
        else:  # insulated: a mirrored ghost cell, so no heat crosses the ends
            first = q * u[0] + p * (u[1] - u[0])
            end = q * u[last] + p * (u[last - 1] - u[last])
        u = [first, *new, end]
        den *= q
    return [Fraction(x, den) for x in u]


def decimal_text(value: Fraction, places: int) -> str:
    """``value`` rounded half-even to ``places`` digits after the point, computed exactly."""
    scaled = round(value * 10**places)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"


def solve(problem: Problem) -> dict[str, Any]:
    final = simulate(problem.initial, problem.alpha, problem.steps, problem.boundary)
    peak = max(final)
    return {
        "metrics": {
            "cell_updates": problem.cells * problem.steps,
            "max_cell": final.index(peak),
            "max_temperature": str(peak),
            "total_heat_final": str(sum(final, Fraction(0))),
            "total_heat_initial": str(sum(problem.initial, Fraction(0))),
        },
        "outputs": {
            "alpha": str(problem.alpha),
            "boundary": problem.boundary,
            "cells": problem.cells,
            "steps": problem.steps,
            "temperatures": [str(v) for v in final],
            "temperatures_decimal": [decimal_text(v, problem.decimals) for v in final],
        },
    }


def profile_csv(problem: Problem, result: dict[str, Any]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["cell", "initial", "final", "final_exact"])
    finals = result["outputs"]["temperatures"]
    decimals = result["outputs"]["temperatures_decimal"]
    for i, start in enumerate(problem.initial):
        writer.writerow([i, decimal_text(start, problem.decimals), decimals[i], finals[i]])
    return out.getvalue().encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Exact values after many steps have more digits than Python prints by default.
    sys.set_int_max_str_digits(0)
    if args in (["--version"], ["-V"]):
        print(f"heat1d {__version__}")
        return 0
    if args:
        print("usage: heat1d [--version] < RUN_INPUT.json", file=sys.stderr)
        return 2
    try:
        problem = Problem(parse_run_input(sys.stdin.buffer.read()))
    except InputError as exc:
        print(f"heat1d: error: {exc}", file=sys.stderr)
        return 2
    result = solve(problem)
    artifacts = os.environ.get("RUNYARD_ARTIFACTS_DIR")
    if artifacts:
        try:
            folder = Path(artifacts)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "profile.csv").write_bytes(profile_csv(problem, result))
        except OSError as exc:
            print(
                f"heat1d: error: cannot write profile.csv to {artifacts}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

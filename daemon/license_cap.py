"""The license's ``max_services`` over one supervisor's services: which may run, and why not.

A license may cap how many services run (community: no cap). Those beyond the cap are chosen by
``spec.admit`` (start order, a service only with its dependencies, at reload the admitted ones
keep their place): they are never started, their status reason says why, and a ``start``
naming one is refused (``OverLimit``). A reload reads the license again; one that cannot be read
then leaves the license in force, so a license problem never breaks a reload.

This module decides and words the reasons; the supervisor applies them to its runners
(``block``/``unblock``): one writer of a runner's state, as everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from runyard.runtime.core.errors import OverLimit
from runyard.runtime.ops.license import COMMUNITY_LIMITS, LicenseStatus

from .spec import admit

__all__ = ["LicenseCap", "OverLimit"]


class LicenseCap:
    """The license in force and the services it leaves out (``blocked``: name -> reason)."""

    def __init__(
        self,
        license: LicenseStatus | None,
        loader: Callable[[], LicenseStatus] | None,
        log: logging.Logger,
    ) -> None:
        #: The license in force (None: community limits); ``reload`` asks ``loader`` again.
        self.license = license
        self.loader = loader
        self.log = log
        #: Services over max_services -> why they are not started.
        self.blocked: dict[str, str] = {}

    @property
    def max_services(self) -> int | None:
        if self.license is not None:
            return self.license.max_services
        return COMMUNITY_LIMITS.get("max_services")

    @property
    def tier(self) -> str:
        return self.license.tier if self.license is not None else "community"

    def admit(
        self,
        order: Sequence[str],
        deps: Mapping[str, tuple[str, ...]],
        keep: Iterable[str] = (),
    ) -> dict[str, str]:
        """Decide which of ``order`` may run (``blocked`` becomes the others, each with its
        reason); returns what was blocked before, for the supervisor to unblock."""
        limit = self.max_services
        admitted = set(admit(order, deps, limit, frozenset(keep)))
        before, self.blocked = self.blocked, {}
        for position, name in enumerate(order, start=1):
            if name in admitted:
                continue
            self.blocked[name] = (
                f"not started: over the {self.tier} tier's limit of {limit} services "
                f"(max_services); this is service {position} of {len(order)} in start order"
            )
        if self.blocked:
            first = next(iter(self.blocked))
            self.log.warning(
                "%d service(s) over the %s tier's limit of %s (max_services) are not started: %s%s",
                len(self.blocked),
                self.tier,
                limit,
                first,
                f" and {len(self.blocked) - 1} more" if len(self.blocked) > 1 else "",
            )
        return before

    def refuse(self, names: Iterable[str]) -> None:
        """Raise OverLimit naming the first of ``names`` (dependencies included by the caller)
        beyond the limit."""
        over = [n for n in names if n in self.blocked]
        if over:
            more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
            raise OverLimit(f"{over[0]}: {self.blocked[over[0]]}{more}")

    def reload(self) -> None:
        """Read the license again; log it when it changed; keep the old one if it cannot be read."""
        if self.loader is None:
            return
        try:
            new = self.loader()
        except Exception as exc:  # a license problem never breaks a reload
            self.log.error("license: cannot read it again: %s; keeping the current one", exc)
            return
        old = self.license
        if old is None or (new.status, new.tier, dict(new.limits)) != (
            old.status,
            old.tier,
            dict(old.limits),
        ):
            log = self.log.info if new.ok else self.log.warning
            log("%s", new.summary())
        self.license = new

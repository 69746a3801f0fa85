"""The plan of a bundle: what its signed manifest says the archive holds, checked two ways.

Before any member is read (`BundlePlan.problems`): every listed path is a clean relative name
in a place a bundle may use (``layout.member_problem``), the listed files, links and dirs pass
the whole-archive rules of ``runtime.archive_rules`` (nothing under a symlink or a file,
no duplicate, no symlink resolving outside), and each service's install-time digests
(``services[].files``) agree with ``bundle.files`` for its install dir, its binPath being an
executable listed file.

While the members stream by (`BundlePlan.expect`, `BundlePlan.finish`): each member is listed,
once, with the same kind, mode class (0644 or 0755) and link target; each file's sha256 is
the listed one; and at the end nothing listed is missing. Since every member must be in the
plan and the plan passed the archive rules, the archive passes them too.

Sizes: every file has its size in ``bundle.sizes`` (a manifest without them, packed before
they were recorded, is refused), and each file member's archive header must give that size
(`BundlePlan.check_size`), checked before a byte of the member is read: a member that grew
after signing cannot fill a disk before its sha256 is found wrong.
"""

from __future__ import annotations

from msgspec import UNSET

from runyard.runtime.acquisition.archive_rules import Entry, check_plan, clean_name
from runyard.runtime.core.errors import UnsafeArchiveError
from runyard.runtime.core.manifest import RuntimeManifest

from .layout import MANIFEST, contents_of, member_problem

__all__ = ["BundlePlan"]


class BundlePlan:
    def __init__(self, manifest: RuntimeManifest) -> None:
        self.manifest = manifest
        self.contents = contents_of(manifest.bundle)
        c = self.contents
        implied: set[str] = set(c.dirs)
        for name in [*c.files, *c.links, *c.dirs]:
            parts = name.split("/")[:-1]
            implied.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        self.dirs = implied
        sizes = manifest.bundle.sizes
        #: ``bundle.sizes``: None in a manifest that records none (refused by `problems`).
        self.sizes: dict[str, int] | None = None if sizes is UNSET else dict(sizes)
        self.seen: set[str] = set()

    def size_of(self, name: str) -> int:
        """The listed size of file ``name`` (0 when unlisted; `problems` refuses that)."""
        return (self.sizes or {}).get(name, 0)

    @property
    def total_size(self) -> int:
        """The bytes of every listed file."""
        return sum((self.sizes or {}).values())

    # --- before reading ------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every reason the plan itself is unacceptable, one line each."""
        c = self.contents
        out: list[str] = []
        if not c.version:
            out.append(f"{MANIFEST}: no bundle.version: not a runtime bundle's manifest")
        names = [*c.files, *c.links, *c.dirs]
        for name in names:
            clean, problem = clean_name(name)
            if problem or clean != name:
                out.append(f"{name!r}: not a clean relative member name")
                continue
            problem = member_problem(name)
            if problem:
                out.append(f"{name}: {problem}")
        if MANIFEST in c.files or MANIFEST in c.links:
            out.append(f"{MANIFEST}: lists itself")
        if self.sizes is None:
            out.append(
                f"{MANIFEST}: no bundle.sizes: packed by a Runyard that recorded no member sizes; "
                "repack it with this one"
            )
        else:
            unsized = sorted(set(c.files) - set(self.sizes))
            out += [f"{name}: bundle.sizes lists no size for it" for name in unsized]
        entries = [Entry(d, "dir") for d in sorted(self.dirs)]
        entries += [Entry(f, "file") for f in c.files]
        entries += [Entry(n, "symlink", target=t) for n, t in c.links.items()]
        try:
            check_plan(entries, MANIFEST)
        except UnsafeArchiveError as exc:
            out.append(str(exc))
        out += self._service_problems()
        return out

    def _service_problems(self) -> list[str]:
        c = self.contents
        out: list[str] = []
        for i, s in enumerate(self.manifest.services):
            at = f"services[{i}] ({s.name} {s.version} {s.platform})"
            prefix = s.install_rel + "/"
            listed = {n[len(prefix) :]: d for n, d in c.files.items() if n.startswith(prefix)}
            for rel in sorted(set(listed) | set(s.files)):
                if rel not in listed:
                    out.append(f"{at}: files lists {rel} but bundle.files has no {prefix}{rel}")
                elif rel not in s.files:
                    out.append(f"{at}: bundle.files has {prefix}{rel} but the service lacks it")
                elif listed[rel] != s.files[rel]:
                    out.append(f"{at}: {prefix}{rel} has another sha256 in bundle.files")
            if s.bin_path not in c.files:
                out.append(f"{at}: binPath {s.bin_path} is not a file of the bundle")
            elif s.bin_path not in c.executables:
                out.append(f"{at}: binPath {s.bin_path} is not listed as executable")
        return out

    # --- while reading -------------------------------------------------------------------

    def expect(self, entry: Entry) -> str | None:
        """Why this member may not be in the archive (one line), or None."""
        c = self.contents
        name = entry.name
        if entry.kind == "dir":
            if name and name not in self.dirs:
                return f"{name}/: directory not listed in {MANIFEST}"
            return None
        if name in self.seen:
            return f"{name}: appears more than once in the archive"
        self.seen.add(name)
        if entry.kind == "hardlink":
            return f"{name}: is a hard link; a bundle holds none"
        if entry.kind == "symlink":
            if name not in c.links:
                return f"{name}: symlink not listed in {MANIFEST}"
            if c.links[name] != entry.target:
                return f"{name}: links to {entry.target!r}, {MANIFEST} says {c.links[name]!r}"
            return None
        if name not in c.files:
            kind = "symlink" if name in c.links else "directory" if name in self.dirs else ""
            return f"{name}: " + (
                f"is a file, {MANIFEST} lists a {kind}" if kind else f"not listed in {MANIFEST}"
            )
        executable = bool(entry.mode & 0o111)
        if executable != (name in c.executables):
            have, want = ("0755", "0644") if executable else ("0644", "0755")
            return f"{name}: mode {have}, {MANIFEST} says {want}"
        return None

    def check_size(self, entry: Entry) -> str | None:
        """Why a listed file member's archive header size is not the listed one, or None.
        Checked before a byte of it is read, so a member that grew cannot fill a disk."""
        want = (self.sizes or {}).get(entry.name)
        if want is not None and entry.size != want:  # an unlisted size is a plan problem
            return f"{entry.name}: the archive says {entry.size} bytes, {MANIFEST} says {want}"
        return None

    def check_digest(self, name: str, sha256: str) -> str | None:
        want = self.contents.files[name]
        if sha256 != want:
            return f"{name}: sha256 {sha256[:12]}... differs from {MANIFEST} ({want[:12]}...)"
        return None

    def finish(self) -> list[str]:
        """Members the manifest lists that the archive lacked."""
        c = self.contents
        missing = sorted(n for n in [*c.files, *c.links] if n not in self.seen)
        return [f"{n}: listed in {MANIFEST} but missing from the archive" for n in missing]

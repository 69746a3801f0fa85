"""runtime.runs.artifact_index: the one parser of ARTIFACT_INDEX.json (verify, chain, runs.show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.runtime.runs.artifact_index import (
    ArtifactIndexError,
    index_entries,
    read_artifact_index,
)

GOOD = {"path": "artifacts/a.csv", "role": "artifact", "sha256": "0" * 64, "size": 3}


def test_entries_with_a_path_are_kept_in_order_and_the_others_counted() -> None:
    second = {**GOOD, "path": "RUN_INPUT.json", "role": "run"}
    doc = {"files": [GOOD, {"role": "run"}, "junk", second], "run_id": "x"}
    assert index_entries(doc) == ([GOOD, second], 2)


@pytest.mark.parametrize("doc", [None, [], {"files": {}}, {"run_id": "x"}, "files"])
def test_an_index_without_a_files_array_is_refused_by_name(doc: object) -> None:
    with pytest.raises(ArtifactIndexError, match=r"^ARTIFACT_INDEX.json: not an object with"):
        index_entries(doc)


def test_reading_names_the_file_when_missing_or_not_strict_json(tmp_path: Path) -> None:
    with pytest.raises(ArtifactIndexError, match=r"^ARTIFACT_INDEX.json: cannot read: "):
        read_artifact_index(tmp_path)
    (tmp_path / "ARTIFACT_INDEX.json").write_bytes(b'{"files": [], "files": []}')
    with pytest.raises(ArtifactIndexError, match=r"^ARTIFACT_INDEX.json: duplicate object key"):
        read_artifact_index(tmp_path)
    (tmp_path / "ARTIFACT_INDEX.json").write_bytes(b'{"files": [{"path": "a"}]}')
    assert read_artifact_index(tmp_path) == [{"path": "a"}]

"""Publishing a folder built in a staging sibling: the GGUF conversion cache, processed cohorts and the extracted
MIMIC-IV demo are written so; concurrent writers must neither crash nor remove each other's finished folder."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from eagrl.utils.artifacts import publish_folder, staging_folder


def whole(folder: Path) -> bool:
    """The test's completeness rule: the marker file exists (written last)."""
    return (folder / "marker").is_file()


def built(target: Path, content: str) -> Path:
    """A finished staging folder for ``target`` holding ``content`` in its data file and a marker."""
    staging = staging_folder(target)
    staging.mkdir()
    (staging / "data").write_text(content)
    (staging / "marker").write_text("")
    return staging


def test_the_first_finished_folder_stays_and_a_second_is_discarded(tmp_path):
    target = tmp_path / "cache"
    assert publish_folder(built(target, "first"), target, whole)
    assert not publish_folder(built(target, "second"), target, whole)
    assert (target / "data").read_text() == "first"
    # only the folder and the hidden lock file are left: no staging folder
    assert sorted(path.name for path in tmp_path.iterdir()) == [".cache.lock", "cache"]


def test_an_incomplete_folder_is_replaced(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "data").write_text("torn")
    assert publish_folder(built(target, "whole"), target, whole)
    assert (target / "data").read_text() == "whole" and whole(target)


def slowly_whole(folder: Path) -> bool:
    """:func:`whole`, then a pause that holds the writer between its check and its move."""
    answer = whole(folder)
    time.sleep(0.5)
    return answer


def publish_from_a_process(target: Path, content: str, barrier) -> bool:
    """Build a folder in this process's staging sibling, wait for the others, then publish at once."""
    staging = built(target, content)
    barrier.wait()
    return publish_folder(staging, target, slowly_whole)


def test_concurrent_writers_publish_exactly_one_folder(tmp_path):
    target = tmp_path / "cache"
    writers = 6
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(writers) as pool:
        barrier = manager.Barrier(writers)
        published = pool.starmap(publish_from_a_process, [(target, f"writer {i}", barrier) for i in range(writers)])
    assert sum(published) == 1
    assert (target / "data").read_text() == f"writer {published.index(True)}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".cache.lock", "cache"]

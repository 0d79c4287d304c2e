"""Obtain raw files from a local source folder or their upstream URL, verifying sha256 either way.

The raw folder under the run's data dir only ever holds verified files: a file is copied (or linked)
into it after its checksum matches, so a half-downloaded or corrupt file is never picked up later.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from eagrl.errors import DataError

log = logging.getLogger(__name__)

#: ``paths.raw_source`` value that means "download each file from its upstream URL".
UPSTREAM = "upstream"


@dataclass(frozen=True)
class RawFile:
    """One raw input file of a dataset.

    Attributes:
        key: name the dataset loader uses for it (e.g. ``xlsx``).
        path: path relative to the raw source folder (e.g. ``tjh/time_series.xlsx``).
        sha256: expected checksum (hex); ``None`` skips verification with a warning.
        url: upstream download address, or ``None`` when the file only exists in a source folder.
    """

    key: str
    path: str
    sha256: str | None
    url: str | None = None


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str | None, option: str) -> str:
    """Return the file's sha256, raising :class:`DataError` when it differs from ``expected``.

    Args:
        path: file to check.
        expected: expected hex digest, or ``None`` to accept any content (logged).
        option: config key holding the expected value, named in the error message.
    """
    actual = sha256_of(path)
    if expected is None:
        log.warning("%s: checksum not verified (%s is null); sha256 is %s", path, option, actual)
    elif actual != expected.lower():
        raise DataError(
            f"checksum mismatch for {path}: expected {expected} ({option}), got {actual}; "
            "the file is corrupt or a different version"
        )
    return actual


def _download(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` through a temporary file (atomic rename)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as error:
            Path(tmp.name).unlink(missing_ok=True)
            raise DataError(f"cannot download {url}: {error}; set paths.raw_source to a local folder") from None
    os.replace(tmp.name, destination)


def obtain(raw_file: RawFile, source: str, raw_dir: Path, option_prefix: str, link: bool = True) -> Path:
    """Make ``raw_file`` available, verified, under ``raw_dir`` and return its path there.

    Args:
        raw_file: the file to obtain.
        source: a local folder holding ``raw_file.path``, or ``"upstream"`` to download it.
        raw_dir: folder of verified raw files (created if missing).
        option_prefix: config path of this file's entry, used in error messages.
        link: symlink from a local source instead of copying it.

    Raises:
        DataError: the file is missing, cannot be downloaded, or fails its checksum.
    """
    target = raw_dir / raw_file.path
    checksum_option = f"{option_prefix}.sha256"
    if target.exists() and raw_file.sha256 is not None and sha256_of(target) == raw_file.sha256.lower():
        return target
    if source == UPSTREAM:
        if not raw_file.url:
            raise DataError(
                f"{raw_file.path} has no upstream URL ({option_prefix}.url); "
                "set paths.raw_source to a folder that holds it"
            )
        staged = target.with_name(target.name + ".part")
        _download(raw_file.url, staged)
        try:
            verify_checksum(staged, raw_file.sha256, checksum_option)
        except DataError:
            staged.unlink(missing_ok=True)
            raise
        os.replace(staged, target)
        return target
    source_file = Path(source).expanduser().resolve() / raw_file.path
    if not Path(source).expanduser().is_dir():
        raise DataError(
            f"raw source folder {source} does not exist (paths.raw_source); "
            f"point it at the folder holding {raw_file.path}, or use paths.raw_source={UPSTREAM}"
        )
    if not source_file.is_file():
        raise DataError(f"raw file not found: {source_file} ({option_prefix}.path under paths.raw_source)")
    verify_checksum(source_file, raw_file.sha256, checksum_option)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if link:
        target.symlink_to(source_file)
    else:
        shutil.copyfile(source_file, target)
    return target

"""A small disk of its own for a test: a tmpfs mount that a filler file can fill to the brim.

Mounting needs root (CI runs as root); elsewhere the tests that need one are skipped.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 4096  # tmpfs hands out whole pages


def mounted_disk(tmp_path: Path) -> Iterator[Disk]:
    """Mount a 16 MiB tmpfs under ``tmp_path`` for one test (skip the test if that fails)."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield Disk(root)
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=False)


class Disk:
    """A mounted tmpfs of a few MiB."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        """Take every free byte (the filler's descriptor is closed: freeing it frees them)."""
        with self.filler.open("ab", buffering=0) as out:
            while True:
                try:
                    out.write(b"\0" * CHUNK)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        assert self.free_bytes() < CHUNK

    def free(self) -> None:
        """Give the filler's room back."""
        self.filler.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        """Bytes free on the disk now."""
        return shutil.disk_usage(self.root).free

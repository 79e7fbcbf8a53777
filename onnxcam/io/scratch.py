"""Temporary folders that do not outlive their process, however it ends.

A process that dies without running its finalisers (SIGKILL, ``os._exit``, a Ray worker stopped at
shutdown) cannot remove its temporary folders; for the explainer's weights (``held_weights``) that
is the weights' size on disk, every time. So each folder made here holds a lock file that its
process keeps locked (``flock``: the kernel releases it when the process dies), and making a
folder first removes the folders of the same prefix whose lock nobody holds any more.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no sweep; folders go when their process exits
    fcntl = None

__all__ = ["LOCK_FILE", "ScratchFolder", "remove_abandoned_folders"]

log = logging.getLogger(__name__)

LOCK_FILE = "owner.lock"
# this process's own folders, never swept: where flock is emulated with POSIX locks (NFS), this process
# would get its own lock again, and closing that second descriptor would drop the lock it holds
_OWN: set[str] = set()


class ScratchFolder:
    """A new temporary folder named ``prefix…``, removed by :meth:`cleanup`, when this object goes, or
    — if the process dies first — by the next :class:`ScratchFolder` of the same prefix on the machine."""

    def __init__(self, prefix: str):
        remove_abandoned_folders(prefix)
        self._folder = tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True)
        self.path = Path(self._folder.name)
        _OWN.add(str(self.path))
        try:
            self._lock = _locked(self.path)  # closed (unlocked) with this object, or by the kernel
        except OSError:
            self.cleanup()
            raise
        weakref.finalize(self, _OWN.discard, str(self.path))

    def cleanup(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.close()
        self._folder.cleanup()
        _OWN.discard(str(self.path))


def remove_abandoned_folders(prefix: str, parent: str | None = None) -> int:
    """Remove the folders named ``prefix…`` in ``parent`` (the temporary folder) whose process has
    died, that is whose lock file can be locked; the number removed. Folders without a lock file (being
    made, or left by versions before the locks) and links are left alone."""
    if fcntl is None:
        return 0
    try:
        entries = [e.path for e in os.scandir(parent or tempfile.gettempdir())
                   if e.name.startswith(prefix) and e.path not in _OWN
                   and e.is_dir(follow_symlinks=False)]  # a link is nobody's folder
    except OSError:
        return 0
    removed = 0
    for folder in entries:
        try:
            with open(Path(folder) / LOCK_FILE, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no lock file, not ours to open, or its process holds it
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += not os.path.lexists(folder)  # another user's, in a shared temporary folder, stays
    if removed:
        log.debug("removed %d temporary folder(s) left by processes that died", removed)
    return removed


def _locked(folder: Path):
    """The folder's lock file, open and locked. Locked under another name first, then renamed, so that a
    sweep never finds the lock file before it is locked."""
    if fcntl is None:
        return None
    pending = folder / f".{LOCK_FILE}"
    lock = open(pending, "wb")  # noqa: SIM115  (kept open, and locked, for the folder's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pending.rename(folder / LOCK_FILE)
    except OSError:
        lock.close()
        raise
    return lock

"""Writing outputs so that a kill at any instant leaves the old complete set or the new one.

:func:`write_atomically` writes one file (a temporary file beside it, then a rename).
:class:`OutputSet` writes a run's files into a staging folder and commits them into OUTDIR at
once. On Linux the staging folder is a sibling of OUTDIR holding the new files plus hard links
to the other files already in OUTDIR, and the commit swaps the two folders in one
``renameat2(RENAME_EXCHANGE)``: readers see the old folder or the new one, never a mix. Where that
is not possible (another OS, a filesystem without it, sub-folders in OUTDIR, a parent folder
that is not writable) the staging folder sits inside OUTDIR, a ``COMMITTING`` marker is written
before the files are moved one by one, and a run killed during the moves is finished by the
next run into that folder before it does anything else. Staging folders of runs that died are
removed by the next run.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
from pathlib import Path

from onnxcam.errors import OutputError

__all__ = ["write_atomically", "write_staged", "OutputSet", "STAGING_PREFIX", "file_mode"]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".onnxcam-"
_MARKER = "COMMITTING"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _current_umask() -> int:
    """The umask, read without changing it where the OS tells (Linux), else set and restored once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def file_mode() -> int:
    """0666 under the process's umask (what ``open`` would give), not mkstemp's 0600."""
    return 0o666 & ~_current_umask()


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write into '{path.parent}': {exc.strerror or exc}; choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write '{path}': {exc.strerror or exc}") from None


def write_staged(path: str | Path, data: bytes) -> None:
    """Write a file straight into a staging folder, which is committed or discarded whole: no temporary
    file and rename per file (they cost ~4× the write of a 90 kB PNG here)."""
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write '{path}': {exc.strerror or exc}") from None


class OutputSet:
    """The files one run writes into ``out``: staged, then committed together (or discarded)."""

    def __init__(self, out: str | Path, names: list[str], overwrite: bool = False):
        self.out = Path(out)
        self.names = list(names)
        _prepare(self.out)
        recover(self.out)
        _check_conflicts(self.out, self.names, overwrite)
        self.staging, self._swap = _make_staging(self.out)

    def path(self, name: str) -> Path:
        return self.staging / name

    def commit(self) -> None:
        """Put every staged file into ``out`` at once (old files of the same names are replaced)."""
        try:
            if self._swap and self._link_others():
                try:
                    _exchange(self.staging, self.out.resolve())
                    shutil.rmtree(self.staging, ignore_errors=True)  # now the old folder
                    return
                except OSError as exc:  # a filesystem without RENAME_EXCHANGE
                    log.debug("cannot swap folders (%s); moving the files one by one", exc)
            if self._swap:  # move the staged files inside OUTDIR, then file by file
                inner = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out))
                for name in self.names:
                    if (self.staging / name).exists():
                        os.replace(self.staging / name, inner / name)
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging, self._swap = inner, False
            _move_files(self.staging, self.out, self.names)
        except OSError as exc:
            raise OutputError(f"cannot put the outputs into '{self.out}': {exc.strerror or exc}") from None

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _link_others(self) -> bool:
        """Hard-link the files of ``out`` this run does not write into the staging folder; False
        when ``out`` holds something a hard link cannot carry (a folder)."""
        ours = set(self.names)
        for entry in os.scandir(self.out):
            if entry.name in ours:
                continue
            if entry.is_dir(follow_symlinks=False):
                return False
            os.link(entry.path, self.staging / entry.name, follow_symlinks=False)
        shutil.copymode(self.out, self.staging)
        return True


def _prepare(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=f"{STAGING_PREFIX}probe-")
        probe.close()
    except OSError as exc:
        raise OutputError(f"output folder '{out}' is not writable ({exc.strerror or exc}); choose another -o") from None


def _check_conflicts(out: Path, names: list[str], overwrite: bool) -> None:
    folders = [name for name in names if (out / name).is_dir() and not (out / name).is_symlink()]
    if folders:
        raise OutputError(f"'{out}' holds a folder named {folders[0]}, where an output file goes; move it away")
    if overwrite:
        return
    existing = [name for name in dict.fromkeys(["results.jsonl", *names])
                if (out / name).exists() or (out / name).is_symlink()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise OutputError(f"'{out}' already holds {', '.join(existing[:3])}{more}; pass --overwrite or choose another -o")


def _make_staging(out: Path) -> tuple[Path, bool]:
    """A staging folder beside ``out`` when the folders can be swapped, else inside it."""
    prefix = f".{out.resolve().name}{STAGING_PREFIX}{os.getpid()}-"
    if _can_exchange():
        try:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=out.resolve().parent)), True
        except OSError:
            pass  # the parent folder is not writable: stage inside
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out)), False


def _move_files(staging: Path, out: Path, names: list[str]) -> None:
    """Journaled moves: the marker says the set is complete, so a killed run's moves can be finished."""
    write_atomically(staging / _MARKER, b"\n".join(n.encode() for n in names))
    for name in sorted(names, key=lambda n: n == "results.jsonl"):  # the record last
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)


def recover(out: Path) -> None:
    """Finish or remove what runs that died left in or beside ``out``."""
    inside = [p for p in out.glob(f"{STAGING_PREFIX}*") if p.is_dir()]
    beside = [p for p in out.resolve().parent.glob(f".{out.resolve().name}{STAGING_PREFIX}*") if p.is_dir()]
    for folder in inside + beside:
        if _owner_alive(folder.name):
            continue
        marker = folder / _MARKER
        if folder.parent == out and marker.is_file():
            names = [n for n in marker.read_text().splitlines() if n]
            log.warning("finishing the commit of an earlier run that was stopped (%s)", folder.name)
            _move_files(folder, out, names)
        else:
            log.info("removing the staging folder of an earlier run that was stopped (%s)", folder.name)
            shutil.rmtree(folder, ignore_errors=True)


def _owner_alive(name: str) -> bool:
    try:
        pid = int(name.split(STAGING_PREFIX, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_libc = None


def _can_exchange() -> bool:
    global _libc
    if not hasattr(os, "fork") or os.uname().sysname != "Linux":
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2  # noqa: B018  (glibc 2.28+)
        except (OSError, AttributeError):
            _libc = False
    return bool(_libc)


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    result = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))

"""Output files that never lie: written aside, claimed exclusively, renamed into place only when complete.

    out = OutputFile("events.jsonl", force=False)   # refused at once if another process is writing it
    with open(out.write_path, "w") as f: ...         # a unique temporary name beside the final one
    out.commit()                                     # flush/fsync done by the writer; rename into place
    out.abandon()                                    # an interrupted run: kept as events.partial.jsonl

- A regular path is written under `.<name>.<pid>-<random>.part` beside it (two runs never share a temporary
  name), claimed by a lock file `<name>.lock` created with O_EXCL and holding the writer's pid, so a second
  writer is refused with one line (unless `force`, or the pid in the lock is no longer running), and renamed
  over the final name only by `commit()` after the writer flushed and fsynced it. An existing finished file of
  an earlier run is replaced then, atomically.
- `abandon()` keeps what an interrupted run wrote under a name that says it is partial (`<stem>.partial<suffix>`).
- Special files (a FIFO, a character device such as /dev/null, or "-" for stdout) are written directly and
  never replaced or renamed: a reader on a FIFO gets the lines as they come.
- A symlink is written through (its target is the output), as `>` in a shell would.
Errors a user can cause (a folder that cannot be created, a path under a regular file, a read-only or full
disk) are one line naming the path (OutputError).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
from pathlib import Path

from tpo.errors import TPOError


class OutputError(TPOError):
    """An output cannot be written: the path, why, and what to do."""


def describe_os_error(path: str | os.PathLike, e: OSError, doing: str = "write") -> OutputError:
    why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
           errno.EEXIST: "it exists", errno.EISDIR: "it is a folder"}.get(e.errno, e.strerror or str(e))
    return OutputError(f"{path}: cannot {doing} ({why})")


def partial_name(path: Path) -> Path:
    """`events.jsonl` -> `events.partial.jsonl`: a name that says the run did not finish."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFile:
    """One output path of a run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, *, force: bool = False, keep_suffix: bool = False):
        """keep_suffix: the temporary name ends with the final suffix (`.x.part.mp4`), for writers that choose
        the format from it (OpenCV)."""
        self.path = Path(path)
        if self.path.is_symlink():          # written through: the link keeps pointing at the new file
            self.path = self.path.resolve()
        self.special = str(path) == "-" or _is_special(self.path)
        self._lock: Path | None = None
        self._done = False
        if self.special:
            self.write_path = self.path
            return
        parent = check_path(self.path, force)
        token = f"{os.getpid()}-{secrets.token_hex(3)}"
        name = f".{self.path.stem}.{token}.part{self.path.suffix}" if keep_suffix else f".{self.path.name}.{token}.part"
        self.write_path = parent / name
        self._claim(force)

    def _claim(self, force: bool) -> None:
        lock = self.path.with_name(self.path.name + ".lock")
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is not None and _pid_running(owner) and not force:
                    who = "this process already writes it (two outputs on one path?)" if owner == os.getpid() \
                        else f"another process (pid {owner}) is writing it"
                    raise OutputError(f"{self.path}: {who} (lock {lock}); pass --force to take it over") from None
                lock.unlink(missing_ok=True)       # a stale lock (its writer died), or taken over with force
                continue
            except OSError as e:
                raise describe_os_error(lock, e, "create the lock") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self._lock = lock
            return
        raise OutputError(f"{self.path}: could not claim its lock {lock}")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def commit(self) -> Path:
        """Rename the finished temporary file into place (the writer has closed, flushed and fsynced it)."""
        if self._done or self.special:
            self._done = True
            return self.path
        self._done = True
        try:
            os.replace(self.write_path, self.path)
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise describe_os_error(self.path, e, "rename into place") from None
        finally:
            self._release()
        return self.path

    def abandon(self) -> Path | None:
        """An unfinished run: what was written stays under the partial name (None if nothing was written)."""
        if self._done or self.special:
            self._done = True
            return None
        self._done = True
        try:
            if not self.write_path.exists():
                return None
            target = partial_name(self.path)
            os.replace(self.write_path, target)
            return target
        except OSError:
            return None
        finally:
            self._release()

    def discard(self) -> None:
        """Remove what was written (nothing worth keeping)."""
        if not self.special and not self._done:
            self.write_path.unlink(missing_ok=True)
        self._done = True
        self._release()


def check_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Can `path` be written as an output? Its folder made (or one line why not), not a folder itself, not
    claimed by a running writer (unless `force`). Cheap: the commands call it before loading anything.
    Returns the folder."""
    path = Path(path)
    if str(path) == "-" or _is_special(path):
        return path.parent
    parent = path.parent
    blocker = next((a for a in (parent, *parent.parents) if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"{path}: {blocker} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise describe_os_error(parent, e, "create the folder") from None
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: cannot write in {parent} (permission denied)")
    owner = _lock_owner(path.with_name(path.name + ".lock"))
    if owner is not None and owner != os.getpid() and _pid_running(owner) and not force:
        raise OutputError(f"{path}: another process (pid {owner}) is writing it; pass --force to take it over")
    return parent


def open_text(out: OutputFile):
    """A text stream for `out`: stdout for "-", the special file itself, else the temporary file."""
    if str(out.path) == "-":
        return sys.stdout
    try:
        return open(out.write_path, "w", encoding="utf-8")  # noqa: SIM115 (the sink closes it)
    except OSError as e:
        raise describe_os_error(out.path, e, "open for writing") from None


def sync_close(stream) -> None:
    """Flush, fsync (regular files) and close a stream opened by `open_text` (stdout is only flushed)."""
    stream.flush()
    if stream is sys.stdout:
        return
    try:
        if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            os.fsync(stream.fileno())
    finally:
        stream.close()


def _is_special(path: Path) -> bool:
    try:
        mode = path.stat().st_mode               # follows a symlink to its target
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

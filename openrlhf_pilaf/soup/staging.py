"""The temporary directory a soup is built in, and the ones killed builds leave behind.

A build writes into `.NAME.soup-tmp-XXXXXXXX` beside the output and renames it into place when
complete (builder.py). Exceptions and Ctrl-C remove it, but SIGKILL, the OOM killer or a lost node
skip every cleanup and leave it there, as large as the soup (16 GB for an 8B model). So each build
directory holds a writer marker, `.soup-writer.json`: the writing process's pid, host, boot id and
start time, and the writer holds an exclusive `flock` on that file for the whole build. The kernel
drops the lock when the process dies, however it dies.

The next build of the same output looks at every `.NAME.soup-tmp-*` beside it (`clear_stale`):
- the lock is held, or the marker's pid runs on this host with the same start time: a live
  concurrent build; left alone;
- the marker names this host and a process that is gone (or a boot since): removed, and logged
  with its path and size;
- no marker, or another host (whose processes cannot be checked from here): left alone, with a
  warning naming the path and size, so that nobody loses a live build's files to a guess.
Both checks are needed: `flock` alone can be a no-op on some network file systems, and a pid alone
can be another pid namespace's (containers sharing a host name). Nothing is removed unless both
say the writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

WRITER_FILE = ".soup-writer.json"
TMP_INFIX = ".soup-tmp-"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def tmp_prefix(out: Path) -> str:
    """The name prefix of the build directories of the soup at `out`."""
    return f".{out.name}{TMP_INFIX}"


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22); None where /proc has
    no such process or no such file. Together with the pid it names one process: pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may hold spaces: count from the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _is_running(pid: int, start_ticks: int | None) -> bool:
    """Whether the process `pid`, started at `start_ticks`, still runs on this host."""
    if not Path("/proc/self/stat").is_file():  # no /proc: existence only; a reused pid keeps a directory
        return _pid_exists(pid)
    now = process_start_ticks(pid)
    return now is not None and (start_ticks is None or now == start_ticks)


def describe_process(pid: int | None = None) -> dict[str, Any]:
    """The marker fields naming a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "start_ticks": process_start_ticks(pid),
        "started_unix": time.time(),
    }


def _try_lock(fd: int) -> bool | None:
    """True: locked (nobody else holds it); False: held by someone; None: this file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


class BuildDir:
    """A fresh build directory beside `out`, marked and locked as this process's until `release()`."""

    def __init__(self, out: Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=tmp_prefix(out), dir=out.parent))
        os.chmod(self.path, 0o755)  # mkdtemp makes it private; a model directory is normally readable
        # Written under another name, locked, then renamed: whoever finds WRITER_FILE finds it
        # complete and (while this process lives) locked. rename keeps the inode, hence the lock.
        self._fd = -1
        partial = self.path / (WRITER_FILE + ".partial")
        try:
            self._fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if _try_lock(self._fd) is None:
                logger.debug("%s: no flock on this file system; stale builds are recognised by pid only", self.path)
            os.write(self._fd, json.dumps({**describe_process(), "output": str(out)}).encode())
            os.rename(partial, self.path / WRITER_FILE)
        except BaseException:
            self.remove()
            raise

    def release(self) -> None:
        """Drop the marker and the lock: the directory is about to become the soup."""
        if self._fd >= 0:
            (self.path / WRITER_FILE).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.release()
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class WriterState:
    """What a build directory's marker says about its writer."""

    verdict: Literal["live", "gone", "unknown"]
    reason: str


def _marker_state(directory: Path) -> WriterState:
    try:
        fd = os.open(directory / WRITER_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return WriterState("unknown", f"it has no {WRITER_FILE} (an older build, or one killed as it began)")
    try:
        locked = _try_lock(fd)
        if locked is False:
            return WriterState("live", "its writer holds the build lock")
        try:
            info = json.loads(os.read(fd, 1 << 16))
            pid, host = int(info["pid"]), str(info["host"])
        except (ValueError, KeyError, TypeError) as e:
            return WriterState("unknown", f"its {WRITER_FILE} cannot be read ({e})")
        who = f"pid {pid} on {host}"
        if host != socket.gethostname():
            return WriterState("unknown", f"it was written by {who}, which cannot be checked from here")
        boot = _boot_id()
        if info.get("boot_id") and boot and info["boot_id"] != boot:
            return WriterState("gone", f"its writer, {who}, ran before this machine last booted")
        alive = _is_running(pid, info.get("start_ticks"))
        if alive:
            return WriterState("live", f"its writer, {who}, is running")
        if locked is None:  # no lock to confirm with; a pid from another pid namespace looks dead here
            return WriterState("unknown", f"{who} is not running here, but this file system has no locks to confirm")
        return WriterState("gone", f"its writer, {who}, is no longer running")
    finally:
        os.close(fd)  # releases our probe lock


def writer_state(directory: Path) -> WriterState:
    """Whether the build that made `directory` may still be writing it."""
    return _marker_state(Path(directory))


def directory_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def format_size(n: int) -> str:
    """Bytes in decimal units, as disk tools print them: 999 B, 1.5 MB, 16.0 GB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def clear_stale(out: Path) -> list[Path]:
    """Remove the build directories of `out` whose writer is gone; return them. Logs every one it
    removes (path, size, why) and every one it leaves that is not a live build's."""
    if not out.parent.is_dir():
        return []
    removed = []
    for candidate in sorted(out.parent.glob(tmp_prefix(out) + "*")):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        state = writer_state(candidate)
        size = format_size(directory_size(candidate))
        if state.verdict == "gone":
            shutil.rmtree(candidate, ignore_errors=True)
            if candidate.exists():
                logger.warning("could not fully remove the stale soup build %s (%s): %s", candidate, size, state.reason)
                continue
            logger.warning("removed the stale soup build %s (%s): %s", candidate, size, state.reason)
            removed.append(candidate)
        elif state.verdict == "live":
            logger.info("leaving the soup build %s (%s) alone: %s", candidate, size, state.reason)
        else:
            logger.warning(
                "leaving %s (%s) alone: %s; remove it if no soup build is writing it", candidate, size, state.reason
            )
    return removed

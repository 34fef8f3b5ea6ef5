"""Where a billing database lives and how a run publishes it: the writer lock, the working
copy, the atomic publish and the snapshots. Everything here touches only files this
pipeline made, found by exact name; it never writes through a symbolic link it did not
follow on purpose (``--db`` itself), never replaces a file someone changed during the run,
and keeps the published file's mode and group.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # pipeline_meta.schema_version this version writes and understands
RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{6}"  # pipeline.runner.new_run_id
_LOCK_PID = re.compile(r"PID (\d+)")


class LockedError(Exception):
    """Another process is writing the database."""


class NotABillingDatabase(Exception):
    """``--db`` names a file that is not this pipeline's database: never written into."""


class ChangedDuringRun(Exception):
    """The published file changed while the run worked: the run does not replace it."""


def check_db_path(db: Path) -> None:
    """One clear line for a ``--db`` that cannot be a database file: a FIFO, a device, a
    link to one, a path under a file, DuckDB's ``:memory:``."""
    if str(db) == ":memory:":
        raise NotABillingDatabase(
            "--db :memory: would load into a database nobody could read afterwards: "
            "pass a file path"
        )
    for parent in db.absolute().parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise NotABillingDatabase(f"--db {db}: {parent} is a file, not a folder")
            break
    if db.exists():
        mode = db.stat().st_mode
        if stat.S_ISDIR(mode):
            raise NotABillingDatabase(f"--db {db} is a folder, not a database file")
        if not stat.S_ISREG(mode):
            raise NotABillingDatabase(
                f"--db {db} is not a regular file (a pipe, device or socket"
                f"{', through a link' if db.is_symlink() else ''}): pass a database file"
            )


class Store:
    """Where one database's files live, all beside the published path ``db``.

    A ``--db`` that is a symbolic link (a shared database linked into a project) is
    followed: the working copy, the lock and the snapshots live beside the real file, and
    the new snapshot replaces the real file, not the link (which would leave everyone who
    opens the real file on the old data, and two runs through two links unlocked)."""

    def __init__(self, db: Path) -> None:
        self.db = Path(os.path.realpath(db))
        self.folder = self.db.parent
        self.lock = self.folder / f".{self.db.name}.lock"
        # billing.duckdb keeps snapshots/billing/ (as always); any other name its own
        # folder, so billing.db and billing.duckdb never prune each other's
        own = self.db.stem if self.db.suffix == ".duckdb" else self.db.name
        self.snapshots = self.folder / "snapshots" / own
        own_work = (
            re.escape(f".{self.db.name}.")
            + RUN_ID
            + r"\.work(\.stage(\.gone)?|\.wal|\.compact(\.wal)?)?"
        )
        self._work = re.compile(own_work)

    def work(self, run_id: str) -> Path:
        return self.folder / f".{self.db.name}.{run_id}.work"

    @staticmethod
    def run_of(path: Path) -> str:
        """The run id in the name of one of :meth:`stale_work`'s files."""
        found = re.search(RUN_ID, path.name)
        return found.group() if found else ""

    def stale_work(self) -> list[Path]:
        """This database's working files left by a killed run: exact names only (the files
        of ``b.duckdb.staging`` are not ``b.duckdb``'s)."""
        return sorted(
            p for p in self.folder.glob(f".{self.db.name}.*.work*") if self._work.fullmatch(p.name)
        )


def create_exclusive(path: Path, mode: int = 0o600) -> int:
    """A new file at ``path``, never through a link and never onto an existing file."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


class WriterLock:
    """The one-writer lock: ``flock`` on a lock file beside the database, holding who
    holds it. The kernel drops the lock when the process dies (kill -9 never leaves it
    held); a run removes the file when it is done, so nothing is left behind. The file is
    never opened through a link (a link planted there is refused, its target untouched)."""

    def __init__(self, store: Store, run_id: str, wait_s: float) -> None:
        self.path = store.lock
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise LockedError(
                    f"{self.path} is a symbolic link, not billing's lock file: refusing to"
                    " write through it (remove the link)"
                ) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise LockedError(f"{self.path} is not a regular file: remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"database {store.db} is being written by another billing run "
                        f"({holder}): try again later or pass --wait SECONDS"
                    ) from None
                time.sleep(0.2)
                continue
            try:  # the file we locked may have been removed by the run before us
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        info = {
            "pid": os.getpid(),
            "run_id": run_id,
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "a writer"
    return (
        f"writer pid {info.get('pid')}, run {info.get('run_id')}, started {info.get('started_at')}"
    )


@dataclass(frozen=True)
class Identity:
    """What the run copied: the published file's inode, size and modification time."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    mode: int
    gid: int

    @classmethod
    def of(cls, path: Path) -> Identity:
        st = path.stat()
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_gid)


class Published:
    """The published file held for the length of a run: a read-only DuckDB connection
    (DuckDB then refuses a read-write open from any other process, while read-only opens
    go on), and the identity of what was copied, checked again before publishing.

    The copy is made before the connection opens: DuckDB's lock is a POSIX record lock,
    which the kernel drops when the process closes *any* descriptor of the file."""

    def __init__(self, db: Path, work: Path, deadline: float) -> None:
        self.db = db
        self.identity = Identity.of(db)
        fd = create_exclusive(work)  # (removed by the caller if anything below refuses)
        with os.fdopen(fd, "wb") as out, db.open("rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)
        # held from here to the publish; refuses a writer or a file that is not ours
        self.con = _open_published(db, deadline)
        try:
            _check_ours(self.con, db)
            self.unchanged()  # nobody wrote between the copy and the lock
        except BaseException:
            self.con.close()
            raise

    def unchanged(self) -> None:
        """Refuse to publish over a file that changed since it was copied."""
        try:
            now = Identity.of(self.db)
        except FileNotFoundError:
            now = None
        if now != self.identity:
            raise ChangedDuringRun(
                f"{self.db} changed while the run worked (someone wrote to it or put another"
                " file there): the run did not replace it, so nothing of theirs is lost;"
                " nothing was committed, load the same input again"
            )

    def close(self) -> None:
        self.con.close()


def keep_mode(path: Path, identity: Identity) -> None:
    os.chmod(path, stat.S_IMODE(identity.mode))
    try:
        os.chown(path, -1, identity.gid)
    except PermissionError:
        log.warning("could not give %s the group of the database it replaces", path)


def _open_published(db: Path, deadline: float) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published file; refuse a file another process has
    open for writing, or one that is not a DuckDB database."""
    while True:
        try:
            return duckdb.connect(str(db), read_only=True)
        except duckdb.Error as exc:
            text = str(exc)
            lowered = text.lower()
            if "lock" in lowered or "different configuration" in lowered:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                pid = _LOCK_PID.search(text)
                who = f"pid {pid.group(1)}" if pid else "this process"
                raise LockedError(
                    f"database {db} is in use by another process ({who} has it open for "
                    "writing, not read-only): readers must open it read-only; "
                    "try again later or pass --wait SECONDS"
                ) from None
            raise NotABillingDatabase(
                f"{db} is not a DuckDB database ({text.splitlines()[0]}); "
                "refusing to replace it: pass a new or existing billing database to --db"
                + restore_hint(db)
            ) from None


def _check_ours(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """Only our own databases: the pipeline_meta marker (or an empty DuckDB file), and a
    schema version this version understands."""
    objects = {
        r[0]
        for r in con.execute(
            "select table_name from duckdb_tables() union all"
            " select view_name from duckdb_views() where not internal"
        ).fetchall()
    }
    if not objects:
        return  # an empty DuckDB file: initialised as a new database
    if "pipeline_meta" not in objects:
        raise NotABillingDatabase(
            f"{db} is a DuckDB database but not a billing database "
            f"(it holds {', '.join(sorted(objects)[:5])}); refusing to write into it"
        )
    row = con.execute(
        "select max(value) from pipeline_meta where key = 'schema_version'"
    ).fetchone()
    version = row[0] if row else None
    if version is not None and str(version).isdigit() and int(version) > SCHEMA_VERSION:
        raise NotABillingDatabase(
            f"{db} was written by a newer version of billing (schema version {version}; this"
            f" version knows {SCHEMA_VERSION}): refusing to write into it, upgrade billing"
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(
    store: Store, work: Path, run_id: str, keep_snapshots: int, held: Published | None
) -> None:
    """Make ``work`` the published database in one atomic rename; keep a snapshot. With
    ``held`` (the run copied an existing file), refuse if that file changed meanwhile."""
    if held is not None:
        keep_mode(work, held.identity)  # a database shared with a group stays so
    _fsync(work)
    if held is not None:
        held.unchanged()
    elif store.db.exists() or store.db.is_symlink():
        raise ChangedDuringRun(
            f"{store.db} appeared while the run worked (it was new when the run started):"
            " the run did not replace it; nothing was committed, load the same input again"
        )
    wal = Path(f"{store.db}.wal")
    if wal.exists():  # a write session someone opened on the old snapshot: not ours to replay
        if _snapshot_folder(store):
            orphan = store.snapshots / f"orphaned-{run_id}.wal"
            wal.rename(orphan)
            log.warning("moved a stray %s (not written by billing) to %s", wal, orphan)
    os.replace(work, store.db)
    _fsync(store.folder)
    if held is not None:
        held.close()
    if keep_snapshots <= 0 or not _snapshot_folder(store):
        return
    try:
        os.link(store.db, store.snapshots / f"{run_id}.duckdb")
    except OSError as exc:
        log.warning("could not keep a snapshot of run %s: %s", run_id, exc)
        return
    prune_snapshots(store, keep_snapshots)


def _snapshot_folder(store: Store) -> bool:
    """The snapshot folder, made if missing; False (with a warning) when ``snapshots`` or
    the database's folder in it is a link or not a folder: never followed."""
    for folder in (store.snapshots.parent, store.snapshots):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            log.warning("%s is a link or not a folder: no snapshot kept (never followed)", folder)
            return False
        folder.mkdir(mode=0o755, exist_ok=True)
    return True


def restore_hint(db: Path) -> str:
    """'; the latest good snapshot is ...' when this database has one, else ''."""
    folder = Store(db).snapshots
    try:
        made = re.compile(RUN_ID + r"\.duckdb")
        snaps = sorted(p for p in folder.iterdir() if made.fullmatch(p.name) and p.is_file())
    except OSError:
        return ""
    if not snaps:
        return ""
    return f"; the latest good snapshot is {snaps[-1]} (copy it over {db.name} to restore)"


def prune_snapshots(store: Store, keep: int) -> None:
    """Delete all but the newest ``keep`` snapshots this database made: files named by a
    run id only (a user's own file in the folder is never touched), never a link."""
    made = re.compile(RUN_ID + r"\.duckdb")
    kept = sorted(
        (
            p
            for p in store.snapshots.iterdir()
            if made.fullmatch(p.name) and p.is_file() and not p.is_symlink()
        ),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )
    for old in kept[:-keep]:
        old.unlink(missing_ok=True)

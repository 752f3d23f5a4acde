"""Turning ``sqlite3`` errors into OmniQ errors that name the file and the fix."""

from __future__ import annotations

import sqlite3

from omniq.errors import BackendError, ConfigurationError, OmniQError, PayloadTooLargeError

# primary result codes (https://sqlite.org/rescode.html)
SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_TOOBIG = 18
SQLITE_AUTH = 23
SQLITE_NOTADB = 26


def error_code(e: BaseException) -> int | None:
    """The primary SQLite result code of an error, when known."""
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_busy(e: BaseException) -> bool:
    """True for "database is locked/busy" errors, which are retried with backoff."""
    if not isinstance(e, sqlite3.OperationalError):
        return False
    code = error_code(e)
    if code is not None:
        return code in (SQLITE_BUSY, SQLITE_LOCKED)
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def translate(e: sqlite3.Error, path: str) -> OmniQError:
    """An OmniQ error for ``e`` that names ``path`` and what to do."""
    code = error_code(e)
    msg = str(e)
    low = msg.lower()
    if code == SQLITE_NOTADB or "not a database" in low:
        return ConfigurationError(
            f"{path} is not an SQLite database (or it is encrypted): {msg}. Point the URL at "
            "another file, or move this one away so a new database can be created."
        )
    if code == SQLITE_CORRUPT or "malformed" in low:
        return BackendError(
            f"SQLite database {path} is damaged: {msg}. Restore it from a backup, or try "
            f"`sqlite3 {path} .recover`, or move it away to start a new one."
        )
    if code == SQLITE_FULL or "disk is full" in low:
        return BackendError(
            f"cannot write to SQLite database {path}: the disk is full ({msg}). Free space "
            "on that disk or move the database to another one."
        )
    if code in (SQLITE_READONLY, SQLITE_PERM, SQLITE_AUTH) or "readonly" in low:
        return ConfigurationError(
            f"cannot write to SQLite database {path}: {msg}. Check that the file and its "
            "directory are writable by this user and not on a read-only file system."
        )
    if code == SQLITE_CANTOPEN or "unable to open" in low:
        return ConfigurationError(
            f"cannot open SQLite database {path}: {msg}. Check that its directory exists "
            "and is writable."
        )
    if code == SQLITE_TOOBIG or "too big" in low:
        return PayloadTooLargeError(
            f"payload too large for SQLite database {path}: {msg}. Store large data "
            "elsewhere and pass a reference."
        )
    if code == SQLITE_IOERR or "disk i/o" in low:
        return BackendError(
            f"disk I/O error on SQLite database {path}: {msg}. Check the disk and free space."
        )
    if is_busy(e):
        return BackendError(
            f"SQLite database {path} stayed locked by another connection: {msg}. A process "
            "is holding a long write transaction; raise lock_timeout or stop that process."
        )
    return BackendError(f"SQLite error on {path}: {type(e).__name__}: {msg}")

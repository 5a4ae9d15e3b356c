"""SQLite plumbing the watch journal is built on: one durable transaction, and names as SQLite can hold them.

Names are stored as text; a name whose bytes are not UTF-8 (a Latin-1 `café.jpg` from a card: byte 0xE9), which
Python holds with lone surrogates and SQLite cannot take as text, is stored as a BLOB of its bytes: lossless and
one-to-one (a BLOB never equals a text).
"""

from __future__ import annotations

import sqlite3

from trapcls.core.system.names import display, name_bytes


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one durable step.

    A full disk (SQLITE_FULL) can fail a statement or the COMMIT itself, and SQLite may already have
    rolled the transaction back: roll back only what is still open, so the error that matters is the
    one raised and the connection is ready for the next transaction once there is room again.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one to report; SQLite rolls back on its own when it must


def stored(text: str | None) -> str | bytes | None:
    """A name (or a message naming one) as SQLite can hold it: the text, or the bytes of a name that is not UTF-8."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return name_bytes(text)
    except UnicodeEncodeError:  # a surrogate no file name holds, in a message: kept readable, not one-to-one
        return display(text)


def name_of(value: str | bytes | None) -> str | None:
    """What `stored` stored, as Python holds the name (bytes that are not UTF-8 as lone surrogates)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value

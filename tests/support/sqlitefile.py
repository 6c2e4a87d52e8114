"""Reading a SQLite store file directly (read-only), as backup tests compare copies."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def rows(path: Path, table: str, upto: int | None = None) -> list[tuple]:
    """Every row of ``table`` (up to rowid ``upto``), by rowid."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where = f" WHERE rowid <= {upto}" if upto is not None else ""
        return conn.execute(f'SELECT * FROM "{table}"{where} ORDER BY rowid').fetchall()
    finally:
        conn.close()


def max_rowid(path: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f'SELECT COALESCE(MAX(rowid), 0) FROM "{table}"').fetchone()[0])
    finally:
        conn.close()

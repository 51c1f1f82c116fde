"""Purge journals as JSON Lines files in one directory (`DEALFLOW_PURGE_JOURNAL_DIR`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from dealflow_purge.domain.journal import JournalEntry, journal_file_name


class JournalDirectory:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, run_id: UUID, entries: Sequence[JournalEntry]) -> str:
        """Written to a temporary file first and renamed into place: a reader never sees
        half a journal, and writing a run's journal again replaces it whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / journal_file_name(run_id)
        handle, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                for entry in entries:
                    out.write(json.dumps(entry.document(), separators=(",", ":")) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(target)

"""The built-in registration store: a SQLite file in the state folder (``run_dir``), shared by
every server process of one server (:class:`~wfserve.plugins.store.sqlite.SqliteStore`).

Any plugin answering ``wfserve_registration_store`` first replaces it (a real database for
servers on several hosts); this one is ``trylast``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from wfserve.kernel import hookimpl
from wfserve.plugins.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from wfserve.kernel.settings import Settings

#: the store's file name inside ``run_dir``
FILE_NAME = "registrations.sqlite"


@hookimpl(trylast=True)
def wfserve_registration_store(settings: Settings) -> SqliteStore:
    """``<run_dir>/registrations.sqlite``."""
    return SqliteStore(Path(settings.run_dir).absolute() / FILE_NAME)

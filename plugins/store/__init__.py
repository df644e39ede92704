"""The built-in registration store: a SQLite file in the state folder (``run_dir``), shared by
every server process of one server (:class:`~wfserve.plugins.store.sqlite.SqliteStore`).

Any plugin answering ``wfserve_registration_store`` first replaces it (a real database for
servers on several hosts); this one is ``trylast``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from wfserve.kernel import hookimpl
from wfserve.kernel.startup import STORE
from wfserve.plugins.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from wfserve.kernel.core import Kernel
    from wfserve.kernel.settings import Settings

#: the store's file name inside ``run_dir``
FILE_NAME = "registrations.sqlite"


@hookimpl(trylast=True)
def wfserve_registration_store(settings: Settings) -> SqliteStore:
    """``<run_dir>/registrations.sqlite``."""
    return SqliteStore(Path(settings.run_dir).absolute() / FILE_NAME)


@hookimpl
def wfserve_process_exited(kernel: Kernel, pid: int) -> None:
    """In the parent: take a server process that ended off the roll at once, so no
    management call waits to find out (the members also notice a dead pid themselves)."""
    store = kernel.stash.get(STORE)
    if store is not None:
        store.leave(pid)
        if isinstance(store, SqliteStore):
            store.close()  # NOTE: the parent forks the replacement next

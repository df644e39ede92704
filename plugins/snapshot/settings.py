"""The snapshot plugin's settings."""

from __future__ import annotations

from dataclasses import dataclass

from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class SnapshotSettings:
    """Snapshots of the registrations (``kernel.settings.of(SnapshotSettings)``)."""

    snapshot: bool = setting(True, "Write registrations to a snapshot and restore them at start.")
    snapshot_dir: str = setting(".wfserve/snapshots", "Folder snapshots are written to.")
    snapshot_keep: int = setting(5, "Newest snapshot files kept in snapshot_dir (at least 1).")

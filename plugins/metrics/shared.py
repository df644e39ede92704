"""One scrape for several server processes: prometheus-client's multiprocess files.

With ``--workers N`` (N > 1) every server process keeps its series in its own files in one
folder private to the server run (``<run_dir>/metrics``, mode 0700, wiped by the parent
before it forks: :func:`prepare_folder`), in prometheus-client's multiprocess format
(:class:`prometheus_client.mmap_dict.MmapedDict`, one file per metric type and process):

- ``counter_<pid>.db``, ``histogram_<pid>.db``, ``unknown_<pid>.db`` (TorchServe's untyped
  counters): written through on every update (:class:`FileSink`), so a scrape is exact; they
  stay when the process ends, so a total never goes backwards when a process dies and the
  arbiter replaces it;
- ``gauge_liveall_<pid>.db``: the process's worker and queue gauges, replaced whole (write,
  then rename) by :class:`GaugePublisher` when the process starts, when a workflow changes,
  every :data:`REFRESH_SECONDS` and when this process answers a scrape; removed by the parent
  when the process ends (:func:`process_ended`, prometheus-client's ``mark_process_dead``).

Whichever process answers ``/metrics`` merges every file (:class:`SharedCollector`, over
prometheus-client's ``MultiProcessCollector``): counters and histograms are summed over all
processes, past and present; gauges keep one series per live process, labelled ``pid``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path

import structlog
from prometheus_client.core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from wfserve.plugins.metrics.series import sample_key

log = structlog.get_logger(__name__)
#: seconds between two refreshes of a process's gauges (workers, queues) in its file
REFRESH_SECONDS = 1.0


def prepare_folder(path: Path) -> Path:
    """Make ``path`` an empty folder only this user can read (0700); what was there (an
    earlier run's files) is removed. Returns the absolute path. Called once per server start,
    in the parent, before any server process exists."""
    path = path.absolute()
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)  # NOTE: mkdir's mode is masked by the umask
    return path


def process_ended(folder: Path, pid: int) -> None:
    """Forget the gauges of server process ``pid``, which has ended (any way); its counters
    and histograms stay, so the totals keep what it counted. Called in the parent."""
    mark_process_dead(pid, str(folder))
    (folder / f".gauge_liveall_{pid}.tmp").unlink(missing_ok=True)


class FileSink:
    """One process's file of one metric type; series write their value through it.

    Contract: :attr:`lock` guards the file; a caller holds it around :meth:`read` and
    :meth:`write`, and a writer holds it around computing the new value too, so the file never
    goes back to an older value. A series starts from :meth:`read`: what an earlier process
    with this pid counted, or 0.
    """

    __slots__ = ("_file", "lock")

    def __init__(self, path: Path) -> None:
        self.lock = threading.Lock()
        self._file = MmapedDict(str(path))

    def read(self, key: str) -> float:
        """The value stored for ``key`` (0.0 when new; the key is added); the caller holds
        :attr:`lock`."""
        return float(self._file.read_value(key)[0])

    def write(self, key: str, value: float) -> None:
        """Store ``value`` for ``key``; the caller holds :attr:`lock`."""
        self._file.write_value(key, value, 0.0)

    def close(self) -> None:
        """Close the file (what was written stays); no series may write after."""
        with self.lock:
            self._file.close()


class ProcessFiles:
    """The files of this server process in the shared folder, by metric type."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = os.getpid() if pid is None else pid
        self.counters = FileSink(folder / f"counter_{self.pid}.db")
        self.histograms = FileSink(folder / f"histogram_{self.pid}.db")
        self.untyped = FileSink(folder / f"unknown_{self.pid}.db")

    def close(self) -> None:
        """Close the files (tests; a server process keeps them open until it exits, as a
        late executor callback may still count)."""
        for sink in (self.counters, self.histograms, self.untyped):
            sink.close()


class GaugePublisher:
    """Writes this process's live state (gauges, and counters read from the executors) to
    its files: ``collect`` yields the families, as :class:`~wfserve.plugins.metrics.instruments.
    LiveState` does for one process.

    Gauges replace the process's gauge file whole (written aside, then renamed: a reader sees
    the old file or the new one); counters are written through the process's counter file.
    :meth:`publish` is thread-safe; :meth:`start` runs it every :data:`REFRESH_SECONDS` on a
    daemon thread until :meth:`stop`.
    """

    def __init__(self, files: ProcessFiles, collect: Callable[[], Iterable[Metric]]) -> None:
        self.files = files
        self.collect = collect
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Write the current state now (never raises: a failed refresh is logged)."""
        try:
            with self._lock:
                self._publish()
        except Exception:
            log.exception("metrics: could not publish this process's gauges")

    def _publish(self) -> None:
        gauges: list[tuple[str, float]] = []
        counters: list[tuple[str, float]] = []
        for family in self.collect():
            into = gauges if family.type == "gauge" else counters
            for s in family.samples:
                k = sample_key(family.name, s.name, s.labels, family.documentation)
                into.append((k, s.value))
        sink = self.files.counters
        with sink.lock:
            for k, value in counters:
                sink.write(k, value)
        folder, pid = self.files.folder, self.files.pid
        aside = folder / f".gauge_liveall_{pid}.tmp"
        aside.unlink(missing_ok=True)
        written = MmapedDict(str(aside))
        try:
            for k, value in gauges:
                written.write_value(k, value, 0.0)
        finally:
            written.close()
        aside.replace(folder / f"gauge_liveall_{pid}.db")

    def start(self) -> None:
        """Publish now, then every :data:`REFRESH_SECONDS` until :meth:`stop`."""
        self.publish()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wfserve-metrics-gauges",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(REFRESH_SECONDS):
            self.publish()

    def stop(self) -> None:
        """Stop the refreshes (the file stays until the parent sees the process end)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SharedCollector(Collector):
    """Every server process's files merged: counters and histograms summed, gauges per
    ``pid`` (prometheus-client's ``MultiProcessCollector``, after ``refresh`` brought this
    process's own gauges up to date).

    ``families`` (empty, as ``describe`` gives them) fix the order and the families shown with
    no sample yet, as one process's registry shows them; samples come in label order.
    """

    def __init__(self, folder: Path, refresh: Callable[[], None],
                 families: Sequence[Metric] = ()) -> None:
        self.folder = folder
        self.refresh = refresh
        self.families = list(families)

    def describe(self) -> Iterator[Metric]:
        """Names and types only (lets a restricted registry find the families by name)."""
        return iter(self.families)

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        files = sorted(str(p) for p in self.folder.glob("*.db"))
        merged = {m.name: m for m in MultiProcessCollector.merge(files, accumulate=True)}
        for family in self.families:
            found = merged.pop(family.name, None)
            if found is None:
                yield family
                continue
            found.samples.sort(key=_sample_order)
            yield found
        yield from (merged[name] for name in sorted(merged))


_SUFFIX_ORDER = {"_bucket": 0, "_count": 1, "_sum": 2}


def _sample_order(sample: Sample) -> tuple[tuple[tuple[str, str], ...], int, float]:
    """Label values first, then (histograms) buckets by bound, ``_count``, ``_sum``."""
    labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
    rank = next((r for suffix, r in _SUFFIX_ORDER.items() if sample.name.endswith(suffix)), 0)
    le = sample.labels.get("le")
    return labels, rank, float(le) if le is not None else 0.0

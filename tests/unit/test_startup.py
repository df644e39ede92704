"""Start-up runs in explicit phases (kernel.startup): prepare, restore, register configured,
register defaults, ready. The built-in plugins act in their own phase, so what a snapshot
restored is not registered again, a configured name wins over the bundled example, the
metrics and the snapshot writer exist before the first registration, and gc.freeze comes
after every start-up registration."""

import gc
import textwrap

import pytest

from wfserve.kernel import hookimpl
from wfserve.kernel.contracts import Archive
from wfserve.kernel.core import Kernel
from wfserve.kernel.lifecycle import register_workflow
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.settings import Settings
from wfserve.kernel.startup import PHASES
from wfserve.kernel.startup import start
from wfserve.plugins import example
from wfserve.plugins.example import ExampleSettings
from wfserve.plugins.gc_freeze import FREEZER
from wfserve.plugins.metrics import METRICS
from wfserve.plugins.metrics.executor import InstrumentedExecutor
from wfserve.plugins.snapshot import SNAPSHOTTER
from wfserve.plugins.snapshot.settings import SnapshotSettings
from wfserve.plugins.snapshot.store import Entry
from wfserve.plugins.snapshot.store import files
from wfserve.plugins.snapshot.store import load
from wfserve.plugins.snapshot.store import write

BUILTIN = ("wfserve.plugins.serializers", "wfserve.plugins.api", "wfserve.plugins.metrics",
           "wfserve.plugins.snapshot",
           "wfserve.plugins.example", "wfserve.plugins.gc_freeze")
SPEC = textwrap.dedent("""
    models:
      m1: {url: m1.mar}
    dag:
      pre: [m1]
      m1: [post]
""")


class FakeExecutor:
    def __init__(self, workflow):
        self.workflow = workflow

    def start(self):
        pass

    def close(self, timeout=30.0):
        pass


class Fakes:
    """fetch: names in a folder (each fetch recorded); open_archive: a folder holding the
    spec; executor: does nothing."""

    def __init__(self, store):
        self.store = store
        self.fetched = []

    @hookimpl
    def wfserve_fetch(self, url):
        self.fetched.append(url)
        return self.store / url

    @hookimpl
    def wfserve_open_archive(self, path):
        if path.suffix == ".mar":
            return Archive("mar", path, path, {}, path.stem)
        return Archive("war", path, path, {}, path.stem, spec_file="spec.yaml")

    @hookimpl
    def wfserve_make_executor(self, workflow):
        return FakeExecutor(workflow)


class Recorder:
    """What each phase found when it began (tryfirst: before the built-ins act)."""

    def __init__(self):
        self.phases = []
        self.events = []

    def _saw(self, phase, kernel):
        self.phases.append((phase, sorted(kernel.registry.names())))

    @hookimpl(tryfirst=True)
    def wfserve_startup(self, kernel):
        self._saw("prepare", kernel)

    @hookimpl(tryfirst=True)
    def wfserve_restore(self, kernel):
        self._saw("restore", kernel)

    @hookimpl(tryfirst=True)
    def wfserve_register_configured(self, kernel):
        self._saw("register configured", kernel)

    @hookimpl(tryfirst=True)
    def wfserve_register_defaults(self, kernel):
        self._saw("register defaults", kernel)

    @hookimpl(tryfirst=True)
    def wfserve_ready(self, kernel):
        self._saw("ready", kernel)

    @hookimpl(tryfirst=True)
    def wfserve_workflow_event(self, kernel, event, workflow):
        self.events.append((event, workflow.name, METRICS in kernel.stash,
                            SNAPSHOTTER in kernel.stash, FREEZER in kernel.stash))


@pytest.fixture
def root(tmp_path):
    """A store with ``wf.war``, ``other.war``, ``example.war`` and ``m1.mar``."""
    for name in ("wf.war", "other.war", "example.war"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spec.yaml").write_text(SPEC)
    (tmp_path / "m1.mar").mkdir()
    return tmp_path


@pytest.fixture
def built(monkeypatch):
    """The bundled example's build, faked (no torch): the folders it was built for."""
    calls = []

    def build_example(model_store, workflow_store):
        calls.append(workflow_store)
        return workflow_store / "example.war"

    monkeypatch.setattr(example, "build_example", build_example)
    return calls


@pytest.fixture
def server(root, built, monkeypatch):
    """Builds a kernel over ``root``; ``frozen`` gets the names registered at each
    gc.freeze; every kernel is shut down at the end."""
    kernels = []
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(kernels[-1].registry.names()))

    def make(*, workflows=(), snapshot=True, example_on=True):
        settings = Settings(model_store=str(root), workflow_store=str(root),
                            workflows=list(workflows))
        settings = settings.with_section(
            SnapshotSettings(snapshot=snapshot, snapshot_dir=str(root / "snapshots")))
        settings = settings.with_section(ExampleSettings(example=example_on))
        fakes, recorder = Fakes(root), Recorder()
        pm = make_plugin_manager(settings, builtin=BUILTIN,
                                 env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"},
                                 extra=[("fakes", fakes), ("recorder", recorder)])
        kernels.append(Kernel.create(settings, pm=pm))
        return kernels[-1], fakes, recorder

    make.frozen = frozen
    yield make
    for kernel in kernels:
        kernel.hooks.shutdown(kernel)


def test_the_phases_and_their_order():
    assert [name for name, _ in PHASES] == [
        "prepare", "restore", "register configured", "register defaults", "ready"]


def test_each_phase_finds_the_earlier_ones_done(root, server):
    write(root / "snapshots", [Entry("wf", "2.0", "wf.war", True)], keep=5)
    kernel, _, recorder = server(workflows=["wf=wf.war", "other.war"])
    start(kernel)
    assert recorder.phases == [
        ("prepare", []),
        ("restore", []),
        ("register configured", ["wf"]),  # restored first
        ("register defaults", ["other", "wf"]),  # then the configured ones
        ("ready", ["example", "other", "wf"]),  # the example last
    ]
    assert server.frozen == [["example", "other", "wf"]]  # after every registration
    assert [e[:2] for e in recorder.events] == [
        ("registered", "wf"), ("registered", "other"), ("registered", "example")]
    # metrics, snapshot writer and freezer were there for the first registration event
    assert all(e[2:] == (True, True, True) for e in recorder.events)


def test_a_restored_workflow_is_not_registered_again_by_the_workflows_setting(root, server):
    write(root / "snapshots", [Entry("wf", "2.0", "wf.war", True)], keep=5)
    kernel, fakes, _ = server(workflows=["wf=wf.war"], example_on=False)
    start(kernel)
    versions, default = kernel.registry.versions("wf")
    assert ([e.version for e in versions], default) == (["2.0"], "2.0")  # no 1.0 beside it
    assert fakes.fetched.count("wf.war") == 1  # the restore's fetch only
    assert len(files(root / "snapshots")) == 1  # nothing changed: nothing written


def test_a_configured_example_wins_over_the_bundled_one(server, built):
    kernel, _, _ = server(workflows=["example=other.war"], snapshot=False)
    start(kernel)
    assert kernel.registry.get("example").workflow.url == "other.war"
    assert built == []  # the bundled example was not even built


def test_registrations_after_the_restore_are_written_to_the_snapshot(root, server):
    kernel, _, _ = server(workflows=["other.war"])
    start(kernel)
    newest = load(files(root / "snapshots")[0])
    assert sorted(e.name for e in newest) == ["example", "other"]


def test_without_snapshots_nothing_is_restored_or_written(root, server):
    write(root / "snapshots", [Entry("wf", "2.0", "wf.war", True)], keep=5)
    kernel, _, _ = server(workflows=["other.war"], snapshot=False)
    start(kernel)
    assert SNAPSHOTTER not in kernel.stash
    assert kernel.registry.names() == ["example", "other"]
    assert len(files(root / "snapshots")) == 1


def test_metrics_are_made_in_the_prepare_phase_not_by_the_first_registration(server):
    kernel, _, _ = server(snapshot=False, example_on=False)
    register_workflow(kernel, "other.war")  # a kernel never started: nothing made on the way
    assert METRICS not in kernel.stash
    assert not isinstance(kernel.registry.get("other").executor, InstrumentedExecutor)
    kernel.hooks.startup(kernel)
    assert kernel.pm.get_plugin("metrics.server") is kernel.stash[METRICS]
    register_workflow(kernel, "wf.war")
    assert isinstance(kernel.registry.get("wf").executor, InstrumentedExecutor)

"""The Ray executor plugin's parts that need no Ray cluster: the missing-extra error, settings,
placement options, archive shipping."""

import sys
import zipfile

import pytest

from tests import executor_fakes
from tests.executor_fakes import make_executor
from wfserve.kernel.contracts import Archive
from wfserve.kernel.errors import SpecError
from wfserve.kernel.errors import UsageError
from wfserve.kernel.settings import Settings
from wfserve.kernel.settings import load_settings
from wfserve.kernel.spec import parse_spec
from wfserve.plugins.executors.ray import cluster
from wfserve.plugins.executors.ray import wfserve_spec_sections
from wfserve.plugins.executors.ray.actor import actor_options
from wfserve.plugins.executors.ray.actor import pack_archive
from wfserve.plugins.executors.ray.actor import unpack_archive
from wfserve.plugins.executors.ray.settings import RaySettings

SPEC = """
models:
  m:
    url: m.mar
    ray: {num_cpus: 1, num_gpus: 0.5, resources: {gpu_node: 1}}
dag:
  pre: [m]
"""


@pytest.fixture(autouse=True)
def with_ray_plugin(monkeypatch):
    """The executor builder of the threaded tests, with this plugin registered as well."""
    monkeypatch.setattr(executor_fakes, "BUILTIN",
                        (*executor_fakes.BUILTIN, "wfserve.plugins.executors.ray"))


def test_choosing_ray_without_the_extra_is_an_error_naming_it(tmp_path, monkeypatch):
    """With ``import ray`` failing, executor ray refuses at registration, naming the extra."""
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError) as info:
        make_executor(tmp_path, SPEC, {}, Settings(executor="ray"), start=False)
    assert "pip install 'wfserve[ray]'" in info.value.message
    assert "'ray' extra" in info.value.message


def test_threaded_stays_the_default_executor(tmp_path):
    executor, _ = make_executor(tmp_path, SPEC, {}, Settings(), start=False)
    assert type(executor).__name__ == "ThreadedExecutor"
    assert Settings().executor == "threaded"


def test_ray_settings_from_cli_env_and_yaml(tmp_path):
    assert Settings().of(RaySettings).ray_address == "local"
    cli = load_settings(cli={"executor": "ray", "ray_address": "ray://head:10001"}, env={},
                        sections=[RaySettings])
    assert (cli.executor, cli.of(RaySettings).ray_address) == ("ray", "ray://head:10001")
    env = load_settings(env={"WFSERVE_RAY_NUM_CPUS": "2"}, sections=[RaySettings])
    assert env.of(RaySettings).ray_num_cpus == 2
    conf = tmp_path / "wfserve.yaml"
    conf.write_text("executor: ray\nray.address: auto\nplugins:\n  ray:\n"
                    "    init: {namespace: wf}\n")
    yaml = load_settings(config=conf, env={}, sections=[RaySettings])
    assert yaml.of(RaySettings).ray_address == "auto"
    assert cluster.init_kwargs(yaml) == {"address": "auto", "log_to_driver": False,
                                         "configure_logging": False, "namespace": "wf"}


def test_ray_init_keywords_per_address():
    local = cluster.init_kwargs(Settings().with_section(RaySettings(ray_num_cpus=2)))
    assert local["num_cpus"] == 2 and "address" not in local
    assert "num_cpus" not in cluster.init_kwargs(Settings())
    remote = Settings().with_section(RaySettings(ray_address="ray://h:1"))
    assert cluster.init_kwargs(remote)["address"] == "ray://h:1"
    with pytest.raises(UsageError, match="not local, auto or ray://"):
        cluster.init_kwargs(Settings().with_section(RaySettings(ray_address="http://h:1")))


def test_placement_comes_from_the_models_ray_section():
    node = parse_spec(SPEC, sections=wfserve_spec_sections()).nodes["m"]
    assert actor_options(node) == {"max_restarts": 0, "max_task_retries": 0, "num_cpus": 1,
                                   "num_gpus": 0.5, "resources": {"gpu_node": 1.0}}
    pre = parse_spec(SPEC, sections=wfserve_spec_sections()).nodes["pre"]
    assert actor_options(pre) == {"max_restarts": 0, "max_task_retries": 0}


@pytest.mark.parametrize("section, message", [
    ("{num_gpu: 1}", "unknown key ray.num_gpu"),
    ("{num_cpus: -1}", "ray.num_cpus must be a number >= 0"),
    ("{num_cpus: yes}", "ray.num_cpus must be a number >= 0"),
    ("{resources: [a]}", "ray.resources must map names to numbers"),
])
def test_bad_placement_is_refused_naming_the_key(section, message):
    text = SPEC.replace("{num_cpus: 1, num_gpus: 0.5, resources: {gpu_node: 1}}", section)
    with pytest.raises(SpecError, match=f"model 'm': ray: {message}"):
        parse_spec(text, sections=wfserve_spec_sections())


def test_archive_folder_travels_as_bytes(tmp_path):
    root = tmp_path / "war"
    (root / "sub").mkdir(parents=True)
    (root / "h.py").write_text("x = 1\n")
    (root / "sub" / "w.bin").write_bytes(b"\0\1\2")
    archive = Archive(kind="war", source=tmp_path / "wf.war", root=root, manifest={}, name="wf",
                      handler="h.py")
    copy = unpack_archive(pack_archive(root), archive, "wfserve-test-")
    try:
        assert copy.root != root and copy.handler == "h.py" and copy.source == archive.source
        assert (copy.root / "h.py").read_text() == "x = 1\n"
        assert (copy.root / "sub" / "w.bin").read_bytes() == b"\0\1\2"
    finally:
        import shutil

        shutil.rmtree(copy.root)


def test_an_entry_leaving_its_folder_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.py", "x = 1\n")
    archive = Archive(kind="war", source=bad, root=tmp_path, manifest={}, name="wf")
    with pytest.raises(ValueError, match="leaves its folder"):
        unpack_archive(bad.read_bytes(), archive, "wfserve-test-")

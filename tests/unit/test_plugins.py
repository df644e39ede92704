"""The plugin manager: built-ins, real entry points, disabling, validation, the facade."""

import textwrap
from pathlib import Path

import pytest

from wfserve.kernel import hookimpl
from wfserve.kernel.errors import NoPluginAnswered
from wfserve.kernel.errors import UnknownArchiveFormat
from wfserve.kernel.errors import UnsupportedURL
from wfserve.kernel.plugins import BUILTIN
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import PluginError
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.plugins import plugin_names
from wfserve.kernel.settings import Settings

NO_AUTOLOAD = {"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}


def install_distribution(root: Path, name: str, source: str) -> None:
    """Write a real installed distribution (module + dist-info with a wfserve entry point)."""
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wfserve]\n{name} = {name}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_answers():
    """The built-in serializer answers when nothing else is installed."""
    hooks = Hooks(make_plugin_manager(Settings(), env=NO_AUTOLOAD), Settings())
    assert hooks.serializer("application/json", b"{}").content_type == "application/json"
    assert "serializers" in plugin_names(hooks.pm)


def test_every_builtin_is_registered_under_its_short_name():
    pm = make_plugin_manager(Settings(), env=NO_AUTOLOAD)
    assert plugin_names(pm) == [m.removeprefix("wfserve.plugins.") for m in BUILTIN]


def test_entry_point_plugin_wins_over_the_builtin(site):
    """An installed plugin answering the same first-result hook is asked before the default."""
    install_distribution(site, "wfserve_upper", """
        from wfserve.kernel import hookimpl

        class Upper:
            content_type = "text/upper"
            def serialize(self, obj):
                return str(obj).upper().encode()
            def deserialize(self, data):
                return data.decode().upper()

        @hookimpl
        def wfserve_serializer(content_type):
            return Upper()
    """)
    pm = make_plugin_manager(Settings(), env={})
    assert "wfserve_upper" in plugin_names(pm)
    hooks = Hooks(pm, Settings())
    assert hooks.serializer("text/plain", b"x").deserialize(b"abc") == "ABC"


def test_entry_point_plugin_not_loaded_when_autoload_is_disabled(site):
    install_distribution(site, "wfserve_ignored", """
        from wfserve.kernel import hookimpl

        @hookimpl
        def wfserve_serializer(content_type):
            raise AssertionError("must not be loaded")
    """)
    pm = make_plugin_manager(Settings(), env=NO_AUTOLOAD)
    assert "wfserve_ignored" not in plugin_names(pm)


def test_disabled_builtin_is_not_registered():
    settings = Settings(plugins_disable=["serializers"])
    hooks = Hooks(make_plugin_manager(settings, env=NO_AUTOLOAD), settings)
    assert "serializers" not in plugin_names(hooks.pm)
    with pytest.raises(NoPluginAnswered) as info:
        hooks.serializer("application/json", b"{}")
    assert info.value.hook == "wfserve_serializer"


def test_disable_accepts_the_full_module_name_and_third_party_names(site):
    install_distribution(site, "wfserve_third", """
        from wfserve.kernel import hookimpl

        @hookimpl
        def wfserve_startup(kernel):
            pass
    """)
    settings = Settings(plugins_disable=[*BUILTIN, "wfserve_third"])
    pm = make_plugin_manager(settings, env={})
    assert plugin_names(pm) == []


def test_misspelt_hookimpl_fails_at_start_naming_the_plugin(site):
    install_distribution(site, "wfserve_typo", """
        from wfserve.kernel import hookimpl

        @hookimpl
        def wfserve_fech(url):
            return None
    """)
    with pytest.raises(PluginError, match="wfserve_typo") as info:
        make_plugin_manager(Settings(), env={})
    assert "wfserve_fech" in info.value.message


def test_hookimpl_with_an_argument_the_spec_lacks_is_refused():
    class Bad:
        @hookimpl
        def wfserve_fetch(self, url, mirror):
            return None

    with pytest.raises(PluginError, match="bad") as info:
        make_plugin_manager(Settings(), builtin=(), env=NO_AUTOLOAD, extra=[("bad", Bad())])
    assert info.value.plugin == "bad"


def test_builtin_that_does_not_import_is_a_plugin_error():
    with pytest.raises(PluginError, match="no_such_plugin"):
        make_plugin_manager(Settings(), builtin=("wfserve.plugins.no_such_plugin",),
                            env=NO_AUTOLOAD)


def test_impl_may_take_fewer_arguments_than_its_spec(tmp_path):
    class Local:
        @hookimpl
        def wfserve_fetch(self, url):
            return tmp_path / url

    pm = make_plugin_manager(Settings(), builtin=(), env=NO_AUTOLOAD, extra=[("local", Local())])
    assert Hooks(pm, Settings()).fetch("x.war", tmp_path, "war").path == tmp_path / "x.war"


def test_unanswered_first_result_hooks_raise_named_kernel_errors(tmp_path):
    hooks = Hooks(make_plugin_manager(Settings(), builtin=(), env=NO_AUTOLOAD), Settings())
    with pytest.raises(UnsupportedURL) as fetch:
        hooks.fetch("gopher://x/y.war", tmp_path, "war")
    assert fetch.value.url == "gopher://x/y.war"
    with pytest.raises(UnknownArchiveFormat):
        hooks.open_archive(tmp_path / "x.bin", tmp_path)
    with pytest.raises(NoPluginAnswered, match="wfserve_serve"):
        hooks.serve(kernel=None)


def test_defaults_answer_last_even_when_registered_first():
    """A plugin registered after the built-ins, answering without trylast, is asked first."""
    calls = []

    class Mine:
        @hookimpl
        def wfserve_serializer(self):
            calls.append("mine")

    pm = make_plugin_manager(Settings(), env=NO_AUTOLOAD, extra=[("mine", Mine())])
    serializer = Hooks(pm, Settings()).serializer("application/json", b"1")
    assert calls == ["mine"]  # asked first, said None, the default answered
    assert serializer.content_type == "application/json"

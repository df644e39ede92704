"""Settings: the table, types, and precedence yaml < config.properties < env < CLI."""

import pytest

from wfserve.kernel.errors import UsageError
from wfserve.kernel.plugins import Hooks
from wfserve.kernel.plugins import declared_settings
from wfserve.kernel.plugins import make_plugin_manager
from wfserve.kernel.properties import read_properties
from wfserve.kernel.settings import Settings
from wfserve.kernel.settings import load_settings
from wfserve.kernel.settings import settings_table
from wfserve.plugins.api.settings import ApiSettings
from wfserve.plugins.auth.settings import AuthSettings
from wfserve.plugins.cors import CorsSettings
from wfserve.plugins.handlers.settings import HandlerSettings

#: the built-in plugins' settings classes
SECTIONS = declared_settings(Hooks(make_plugin_manager(
    Settings(), env={"WFSERVE_DISABLE_PLUGIN_AUTOLOAD": "1"}), Settings()))[0]

TORCHSERVE_KEYS = {
    "inference_address", "management_address", "metrics_address", "model_store",
    "workflow_store", "allowed_urls", "max_request_size", "max_response_size",
    "default_response_timeout", "disable_token_authorization", "job_queue_size",
    "certificate_file", "private_key_file", "keystore", "keystore_pass", "keystore_type",
    "cors_allowed_origin", "cors_allowed_methods", "cors_allowed_headers",
    "limit_max_image_pixels", "token_expiration_min",
}


@pytest.fixture
def files(tmp_path):
    yaml_file = tmp_path / "wfserve.yaml"
    props = tmp_path / "config.properties"
    return yaml_file, props


def test_defaults_are_loopback_and_torchserve_ports():
    s = Settings()
    assert s.inference_address == "http://127.0.0.1:8080"
    assert s.management_address == "http://127.0.0.1:8081"
    assert s.metrics_address == "http://127.0.0.1:8082"
    assert s.allowed_urls == ["file://.*", "http(s)?://.*"]
    assert s.job_queue_size == 100


def test_every_torchserve_key_is_in_the_table():
    assert {s.ts_key for s in settings_table(SECTIONS)} >= TORCHSERVE_KEYS


def test_every_setting_has_help_and_a_typed_default():
    for info in settings_table(SECTIONS):
        assert info.help.endswith("."), info.name
        assert info.flag.startswith("--") and info.env.startswith("WFSERVE_")


def test_precedence_yaml_then_properties_then_env_then_cli(files):
    yaml_file, props = files
    yaml_file.write_text("job_queue_size: 10\nmax_request_size: 11\nthreads: 12\nworkers: 13\n")
    props.write_text("job_queue_size=20\nmax_request_size=21\nthreads=22\n")
    env = {"WFSERVE_JOB_QUEUE_SIZE": "30", "WFSERVE_MAX_REQUEST_SIZE": "31"}
    s = load_settings(cli={"job_queue_size": "40"}, env=env, config=yaml_file, ts_config=props,
                      sections=SECTIONS)
    assert s.job_queue_size == 40  # CLI
    assert s.max_request_size == 31  # env
    # "threads" is not a TorchServe key: the properties line is ignored
    assert s.of(ApiSettings).threads == 12
    assert s.of(ApiSettings).workers == 13  # yaml


def test_torchserve_properties_file_keys_and_types(files):
    _, props = files
    props.write_text(
        "# TorchServe config\n"
        "inference_address=http://0.0.0.0:9080\n"
        "management_address: http://127.0.0.1:9081\n"
        "model_store /srv/models\n"
        "allowed_urls=https://s3.amazonaws.com/.*,\\\n    file://.*\n"
        "enable_model_api=true\n"
        "disable_token_authorization=TRUE\n"
        "number_of_netty_threads=4\n"
        "limit_max_image_pixels=false\n"
        "enable_envvars_config=false\n"
        "nubmer_of_gpu=1\n"
    )
    ignored: list[tuple[str, str]] = []
    s = load_settings(ts_config=props, env={}, ignored=ignored, sections=SECTIONS)
    assert s.inference_address == "http://0.0.0.0:9080"
    assert s.management_address == "http://127.0.0.1:9081"
    assert s.model_store == "/srv/models"
    assert s.allowed_urls == ["https://s3.amazonaws.com/.*", "file://.*"]
    assert s.enable_model_api is False  # no direct model registration: reported, not used
    assert s.of(AuthSettings).disable_token_authorization is True
    assert s.of(HandlerSettings).limit_max_image_pixels is False
    reasons = dict(ignored)
    assert list(reasons) == ["enable_model_api", "number_of_netty_threads", "nubmer_of_gpu"]
    assert "405" in reasons["enable_model_api"]
    assert "Netty" in reasons["number_of_netty_threads"]
    assert "not a TorchServe 0.12.0 key" in reasons["nubmer_of_gpu"]


def test_workflow_store_defaults_to_model_store():
    assert str(Settings(model_store="/m").workflow_store_path) == "/m"
    assert str(Settings(model_store="/m", workflow_store="/w").workflow_store_path) == "/w"


def test_env_names_config_files(files):
    yaml_file, props = files
    yaml_file.write_text("log_level: debug\n")
    props.write_text("job_queue_size=7\n")
    s = load_settings(env={"WFSERVE_CONFIG": str(yaml_file), "WFSERVE_TS_CONFIG": str(props)})
    assert (s.log_level, s.job_queue_size) == ("debug", 7)


def test_plugins_section_of_the_yaml(files):
    yaml_file, _ = files
    yaml_file.write_text("plugins:\n  disable: [fetchers.http]\n  ray:\n    address: auto\n")
    s = load_settings(config=yaml_file, env={})
    assert s.plugins_disable == ["fetchers.http"]
    assert s.plugin("ray") == {"address": "auto"}
    assert s.plugin("absent") == {}


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ({"cli": {"job_queue_size": "many"}}, "job_queue_size from --job-queue-size"),
        ({"env": {"WFSERVE_ENABLE_MODEL_API": "maybe"}}, "WFSERVE_ENABLE_MODEL_API"),
        ({"cli": {"log_format": "xml"}}, "not one of"),
        ({"cli": {"no_such": "1"}}, "unknown setting"),
    ],
)
def test_bad_values_name_the_setting_and_the_source(source, words):
    with pytest.raises(UsageError, match=words):
        load_settings(**source)


def test_unknown_yaml_key_is_refused(files):
    yaml_file, _ = files
    yaml_file.write_text("inference_adress: http://127.0.0.1:1\n")
    with pytest.raises(UsageError, match="unknown setting 'inference_adress'"):
        load_settings(config=yaml_file, env={})


def test_unreadable_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(ts_config=tmp_path / "missing.properties", env={})
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(config=tmp_path / "missing.yaml", env={})


def test_properties_reader_separators_and_continuations(tmp_path):
    path = tmp_path / "c.properties"
    path.write_text("! bang comment\na = 1\nb:2\nc 3\nd=x\\\n  y\\\n  z\ne=\n")
    assert read_properties(path) == {"a": "1", "b": "2", "c": "3", "d": "xyz", "e": ""}


def test_shipped_default_config_loads():
    s = load_settings(env={})
    assert s.inference_address.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(("text", "expected"), [
    # TorchServe's allow-list written with Java escapes: \\ is one backslash
    ("allowed_urls=http://127\\\\.0\\\\.0\\\\.1/.*\n", {"allowed_urls": r"http://127\.0\.0\.1/.*"}),
    ("a\\:b\\=c\\ d = v\\:1\\=2\\ 3\n", {"a:b=c d": "v:1=2 3"}),
    ("u=\\u0041\\u00e9\\t|\n", {"u": "A\u00e9\t|"}),
    ("lone=a\\qb\\\\\n", {"lone": "aqb\\"}),
    ("odd=x\\\\\\\n  y\n", {"odd": "x\\y"}),  # \\\\ then a continuation
    ("even=x\\\\\n  y=2\n", {"even": "x\\", "y": "2"}),  # \\\\ ends the line
    ("  # indented comment\\\nk=v\n", {"k": "v"}),  # a comment does not continue
    ("k=1\nk=2\n", {"k": "2"}),
])
def test_properties_are_read_as_java_reads_them(tmp_path, text, expected):
    path = tmp_path / "config.properties"
    path.write_text(text)
    assert read_properties(path) == expected


def test_a_malformed_unicode_escape_is_a_usage_error(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("k=\\u12\n")
    with pytest.raises(UsageError, match="Malformed"):
        read_properties(path)


def test_an_escaped_allow_list_matches_what_torchserve_matches(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("allowed_urls=http://127\\\\.0\\\\.0\\\\.1:8000/.*,file:///srv/.*\n")
    s = load_settings(ts_config=path, env={})
    assert s.allowed_urls == [r"http://127\.0\.0\.1:8000/.*", "file:///srv/.*"]


def test_dollar_references_name_environment_variables(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("model_store=$$STORE$$/models\njob_queue_size=$$QUEUE$$\n")
    s = load_settings(ts_config=path, env={"STORE": "/srv", "QUEUE": "7"})
    assert (s.model_store, s.job_queue_size) == ("/srv/models", 7)
    with pytest.raises(UsageError, match="Invalid Environment Variable QUEUE"):
        load_settings(ts_config=path, env={"STORE": "/srv"})


def test_ts_variables_override_keys_only_when_enabled(tmp_path):
    path = tmp_path / "config.properties"
    env = {"TS_JOB_QUEUE_SIZE": "9", "TS_INFERENCE_ADDRESS": "http://127.0.0.1:9000"}
    path.write_text("job_queue_size=3\n")
    assert load_settings(ts_config=path, env=env).job_queue_size == 3
    path.write_text("job_queue_size=3\nenable_envvars_config=TRUE\n")
    s = load_settings(ts_config=path, env=env)
    assert (s.job_queue_size, s.inference_address) == (9, "http://127.0.0.1:9000")
    assert load_settings(ts_config=path, env=env, cli={"job_queue_size": "4"}).job_queue_size == 4


def test_ts_variables_are_named_by_configmanager_fields(tmp_path):
    """The variable is the Java field's name, not always TS_<KEY>; TS_ALLOWED_URLS needs
    use_env_allowed_urls=true (TorchServe: "for security")."""
    path = tmp_path / "config.properties"
    env = {"TS_TOKEN_EXPIRATION_TIME_MIN": "5", "TS_TOKEN_EXPIRATION_MIN": "7",
           "TS_ALLOWED_URLS": "http://only/.*", "TS_KEYSTORE_PASS": "from-env"}
    path.write_text("enable_envvars_config=true\n")
    s = load_settings(ts_config=path, env=env, sections=SECTIONS)
    assert s.of(AuthSettings).token_expiration_min == 5.0
    assert s.allowed_urls == ["file://.*", "http(s)?://.*"]
    assert s.of(ApiSettings).keystore_pass == "from-env"
    path.write_text("enable_envvars_config=true\nuse_env_allowed_urls=true\n")
    assert load_settings(ts_config=path, env=env).allowed_urls == ["http://only/.*"]


def test_the_config_file_is_found_as_torchserve_finds_it(tmp_path, monkeypatch):
    named, chosen, here = (tmp_path / f"{n}.properties" for n in ("named", "chosen", "here"))
    named.write_text("job_queue_size=1\n")
    chosen.write_text("job_queue_size=2\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).job_queue_size == 100  # none: the defaults
    (tmp_path / "config.properties").write_text("job_queue_size=5\n")
    assert load_settings(env={}).job_queue_size == 5  # ./config.properties when present
    assert load_settings(ts_config=named, env={}).job_queue_size == 1
    env = {"TS_CONFIG_FILE": str(chosen)}
    assert load_settings(ts_config=named, env=env).job_queue_size == 2  # TS_CONFIG_FILE first
    assert not here.exists()


@pytest.mark.parametrize(("line", "key"), [
    ("decode_input_request=false", "decode_input_request"),
    ("service_envelope=kservev2", "service_envelope"),
])
def test_keys_changing_handler_inputs_are_refused_unless_default(tmp_path, line, key):
    path = tmp_path / "config.properties"
    path.write_text(line + "\n")
    with pytest.raises(UsageError, match=f"{key}=.* is not supported"):
        load_settings(ts_config=path, env={})
    path.write_text("decode_input_request=TRUE\nservice_envelope=\n")
    assert load_settings(ts_config=path, env={}).job_queue_size == 100


def test_every_torchserve_key_is_accounted_for():
    """Every key ConfigManager 0.12.0 declares is a setting, read by the loader or ignored
    with a reason; ``wfserve settings`` lists them all."""
    from wfserve.kernel.torchserve_keys import IGNORED
    from wfserve.kernel.torchserve_keys import READ_BY_LOADER
    from wfserve.kernel.torchserve_keys import TS_VARIABLES
    from wfserve.kernel.torchserve_keys import every_key

    setting_keys = {i.ts_key: i.name for i in settings_table(SECTIONS) if i.ts_key}
    assert not set(setting_keys) & set(IGNORED)
    assert not set(READ_BY_LOADER) & (set(IGNORED) | set(setting_keys))
    listed = every_key(setting_keys)
    assert set(TS_VARIABLES.values()) <= set(listed)
    assert listed["keystore"] == "setting keystore"
    assert listed["vmargs"].startswith("ignored: ")


def test_plugin_settings_join_the_table_and_a_disabled_plugin_keys_are_ignored(files):
    yaml_file, props = files
    yaml_file.write_text("threads: 3\ncors_allowed_origin: '*'\n")
    props.write_text("cors_allowed_methods=GET\n")
    s = load_settings(config=yaml_file, ts_config=props, env={"WFSERVE_KEY_FILE": "k.json"},
                      sections=SECTIONS)
    assert (s.of(ApiSettings).threads, s.of(AuthSettings).key_file) == (3, "k.json")
    assert (s.of(CorsSettings).cors_allowed_origin, s.of(CorsSettings).cors_allowed_methods
            ) == ("*", "GET")
    ignored: list[tuple[str, str]] = []
    sections = [c for c in SECTIONS if c is not CorsSettings]
    s = load_settings(config=yaml_file, ts_config=props, env={}, sections=sections,
                      disabled={CorsSettings: "cors"}, ignored=ignored)
    assert s.of(CorsSettings) == CorsSettings()  # the defaults: not loaded
    assert ignored == [("cors_allowed_origin", "plugin cors is disabled"),
                       ("cors_allowed_methods", "plugin cors is disabled")]
    with pytest.raises(UsageError, match="unknown setting 'cors_allowed_origin'"):
        load_settings(config=yaml_file, env={}, sections=sections)


def test_a_setting_declared_twice_is_refused():
    from dataclasses import dataclass

    from wfserve.kernel.settings import setting

    @dataclass(frozen=True)
    class Clash:
        threads: int = setting(1, "Twice.")

    with pytest.raises(UsageError, match="setting threads is declared twice"):
        settings_table([*SECTIONS, Clash])

"""Every key TorchServe 0.12.0 reads from ``config.properties``, and what wfserve does with it.

A key is one of:

- a setting: a :class:`~wfserve.kernel.settings.Settings` field names it as its ``ts_key`` (read
  there; not listed here);
- :data:`READ_BY_LOADER`: read while the file is loaded (``enable_envvars_config``...);
- :data:`IGNORED`: it means nothing here; the reason is reported once at start and listed by
  ``wfserve settings``.

A key in neither is unknown to TorchServe 0.12.0 (a typo, or a newer version's key): reported
as such. :data:`TS_VARIABLES` are the environment variables ``enable_envvars_config=true``
lets override keys: every ``TS_*`` field of ConfigManager, named by the field, not the key
(``TS_TOKEN_EXPIRATION_TIME_MIN`` sets ``token_expiration_min``); ``TS_ALLOWED_URLS`` only with
``use_env_allowed_urls=true``, as TorchServe ("for security").
"""

from __future__ import annotations

from collections.abc import Collection

_NETTY = "a Netty (Java frontend) setting: HTTP threads are `threads` here"
_SYSTEM_METRICS = "wfserve reports no system metrics (CPU, memory, disk): use a node exporter"
_TS_METRICS = ("TorchServe's metrics YAML and log metrics: wfserve serves fixed Prometheus "
               "series per workflow and node on the metrics address")
_IPEX = ("tunes TorchServe's separate Python worker processes; wfserve's handlers run in the "
         "server process: set torch's threads in the handler")
_GRPC = "wfserve has no gRPC API (REST only)"
_SEQUENCE = "sequence batching (stateful models) is not supported"

#: key -> why it is not used (reported once at start when the file sets it)
IGNORED: dict[str, str] = {
    "debug": "a switch of TorchServe's Java frontend; use log_level=debug",
    "load_models": "wfserve serves workflows: list them in `workflows` (NAME=URL); models "
                   "load with the workflow that names them",
    "blacklist_env_vars": "TorchServe hides these variables from its Python worker "
                          "processes; wfserve's handlers run in the server process",
    "default_workers_per_model": "each node's workers come from its workflow spec "
                                 "(minWorkers/maxWorkers), as in TorchServe workflows",
    "default_startup_timeout": "a node loads during its registration request: wfserve has "
                               "no separate start-up timeout",
    "unregister_model_timeout": "unregistering drains the requests in flight with wfserve's "
                                "own bound, then frees the nodes",
    "number_of_netty_threads": _NETTY,
    "netty_client_threads": _NETTY,
    "prefer_direct_buffer": _NETTY,
    "use_native_io": _NETTY,
    "io_ratio": _NETTY,
    "number_of_gpu": "wfserve does not spread workers over a number of GPUs as TorchServe "
                     "does: a handler picks its device",
    "metrics_config": _TS_METRICS,
    "metrics_mode": _TS_METRICS,
    "model_metrics_auto_detect": _TS_METRICS,
    "enable_metrics_api": "/metrics is always served, on the metrics address",
    "disable_system_metrics": _SYSTEM_METRICS,
    "system_metrics_cmd": _SYSTEM_METRICS,
    "metric_time_interval": _SYSTEM_METRICS,
    "ipex_enable": _IPEX,
    "ipex_gpu_enable": _IPEX,
    "cpu_launcher_enable": _IPEX,
    "cpu_launcher_args": _IPEX,
    "async_logging": "a log4j setting: wfserve batches its info lines (log_batch_ms)",
    "default_service_handler": "every .mar names its handler",
    "model_server_home": "TorchServe's install folder: wfserve needs none",
    "install_py_dep_per_model": "wfserve does not pip-install an archive's requirements "
                                "(code run at registration): install them beforehand",
    "grpc_inference_address": _GRPC,
    "grpc_management_address": _GRPC,
    "grpc_inference_port": _GRPC,
    "grpc_management_port": _GRPC,
    "enable_grpc_ssl": _GRPC,
    "grpc_inference_max_connection_age_ms": _GRPC,
    "grpc_inference_max_connection_age_grace_ms": _GRPC,
    "grpc_management_max_connection_age_ms": _GRPC,
    "grpc_management_max_connection_age_grace_ms": _GRPC,
    "ts_open_inference_protocol": "the Open Inference Protocol of TorchServe's gRPC API: "
                                  "wfserve has no gRPC API",
    "initial_worker_port": "TorchServe's frontend-to-worker sockets: wfserve's workers run "
                           "in the server process",
    "initial_distribution_port": "torchrun distribution ports: wfserve starts no torchrun",
    "cpp_log_config": "TorchServe's C++ backend",
    "ts_header_key_sequence_id": _SEQUENCE,
    "ts_header_key_sequence_start": _SEQUENCE,
    "ts_header_key_sequence_end": _SEQUENCE,
    "model_snapshot": "TorchServe's snapshot JSON: wfserve restores its own snapshots "
                      "(snapshot, snapshot_dir)",
    "models": "per-model settings: a workflow spec sets each node's",
    "version": "the TorchServe version written in its snapshots",
    "vmargs": "JVM arguments",
    "plugins_path": "TorchServe's Java plugins: wfserve's plugins are Python packages "
                    "(entry-point group wfserve)",
    "enable_model_api": "wfserve registers models only inside workflows: POST and DELETE "
                        "/models answer 405 whatever its value",
}

#: key -> what the loader does with it (read while the file is loaded)
READ_BY_LOADER: dict[str, str] = {
    "enable_envvars_config": "true: TS_<KEY> environment variables override keys",
    "use_env_allowed_urls": "true: TS_ALLOWED_URLS may override allowed_urls",
    "decode_input_request": "true only (TorchServe's default): any other value is refused",
    "service_envelope": "none only (TorchServe's default): a value is refused",
}

#: ConfigManager's ``TS_*`` fields: environment variable -> the key it overrides
TS_VARIABLES: dict[str, str] = {
    "TS_DEBUG": "debug",
    "TS_INFERENCE_ADDRESS": "inference_address",
    "TS_MANAGEMENT_ADDRESS": "management_address",
    "TS_METRICS_ADDRESS": "metrics_address",
    "TS_LOAD_MODELS": "load_models",
    "TS_BLACKLIST_ENV_VARS": "blacklist_env_vars",
    "TS_DEFAULT_WORKERS_PER_MODEL": "default_workers_per_model",
    "TS_DEFAULT_RESPONSE_TIMEOUT": "default_response_timeout",
    "TS_DEFAULT_STARTUP_TIMEOUT": "default_startup_timeout",
    "TS_UNREGISTER_MODEL_TIMEOUT": "unregister_model_timeout",
    "TS_NUMBER_OF_NETTY_THREADS": "number_of_netty_threads",
    "TS_NETTY_CLIENT_THREADS": "netty_client_threads",
    "TS_JOB_QUEUE_SIZE": "job_queue_size",
    "TS_NUMBER_OF_GPU": "number_of_gpu",
    "TS_METRICS_CONFIG": "metrics_config",
    "TS_METRICS_MODE": "metrics_mode",
    "TS_MODEL_METRICS_AUTO_DETECT": "model_metrics_auto_detect",
    "TS_DISABLE_SYSTEM_METRICS": "disable_system_metrics",
    "TS_IPEX_ENABLE": "ipex_enable",
    "TS_CPU_LAUNCHER_ENABLE": "cpu_launcher_enable",
    "TS_CPU_LAUNCHER_ARGS": "cpu_launcher_args",
    "TS_IPEX_GPU_ENABLE": "ipex_gpu_enable",
    "TS_ASYNC_LOGGING": "async_logging",
    "TS_CORS_ALLOWED_ORIGIN": "cors_allowed_origin",
    "TS_CORS_ALLOWED_METHODS": "cors_allowed_methods",
    "TS_CORS_ALLOWED_HEADERS": "cors_allowed_headers",
    "TS_DECODE_INPUT_REQUEST": "decode_input_request",
    "TS_KEYSTORE": "keystore",
    "TS_KEYSTORE_PASS": "keystore_pass",
    "TS_KEYSTORE_TYPE": "keystore_type",
    "TS_CERTIFICATE_FILE": "certificate_file",
    "TS_PRIVATE_KEY_FILE": "private_key_file",
    "TS_MAX_REQUEST_SIZE": "max_request_size",
    "TS_MAX_RESPONSE_SIZE": "max_response_size",
    "TS_LIMIT_MAX_IMAGE_PIXELS": "limit_max_image_pixels",
    "TS_DEFAULT_SERVICE_HANDLER": "default_service_handler",
    "TS_SERVICE_ENVELOPE": "service_envelope",
    "TS_MODEL_SERVER_HOME": "model_server_home",
    "TS_MODEL_STORE": "model_store",
    "TS_PREFER_DIRECT_BUFFER": "prefer_direct_buffer",
    "TS_ALLOWED_URLS": "allowed_urls",
    "TS_INSTALL_PY_DEP_PER_MODEL": "install_py_dep_per_model",
    "TS_ENABLE_METRICS_API": "enable_metrics_api",
    "TS_GRPC_INFERENCE_ADDRESS": "grpc_inference_address",
    "TS_GRPC_MANAGEMENT_ADDRESS": "grpc_management_address",
    "TS_GRPC_INFERENCE_PORT": "grpc_inference_port",
    "TS_GRPC_MANAGEMENT_PORT": "grpc_management_port",
    "TS_ENABLE_GRPC_SSL": "enable_grpc_ssl",
    "TS_INITIAL_WORKER_PORT": "initial_worker_port",
    "TS_INITIAL_DISTRIBUTION_PORT": "initial_distribution_port",
    "TS_WORKFLOW_STORE": "workflow_store",
    "TS_CPP_LOG_CONFIG": "cpp_log_config",
    "TS_OPEN_INFERENCE_PROTOCOL": "ts_open_inference_protocol",
    "TS_TOKEN_EXPIRATION_TIME_MIN": "token_expiration_min",
    "TS_HEADER_KEY_SEQUENCE_ID": "ts_header_key_sequence_id",
    "TS_HEADER_KEY_SEQUENCE_START": "ts_header_key_sequence_start",
    "TS_HEADER_KEY_SEQUENCE_END": "ts_header_key_sequence_end",
    "TS_DISABLE_TOKEN_AUTHORIZATION": "disable_token_authorization",
    "TS_ENABLE_MODEL_API": "enable_model_api",
}


def ignored_reason(key: str, setting_keys: Collection[str]) -> str | None:
    """Why ``key`` of a ``config.properties`` is not used; None when it is (a setting's key
    in ``setting_keys``, or one the loader reads)."""
    if key in setting_keys or key in READ_BY_LOADER:
        return None
    return IGNORED.get(key, "not a TorchServe 0.12.0 key (a typo, or a newer version's key)")


def every_key(setting_keys: dict[str, str]) -> dict[str, str]:
    """Every TorchServe key, sorted, with what wfserve does with it; ``setting_keys`` maps a
    key to the setting that reads it."""
    keys = {*TS_VARIABLES.values(), *IGNORED, *READ_BY_LOADER, *setting_keys}
    out = {}
    for key in sorted(keys):
        if key in setting_keys:
            out[key] = f"setting {setting_keys[key]}"
        elif key in READ_BY_LOADER:
            out[key] = READ_BY_LOADER[key]
        else:
            out[key] = "ignored: " + IGNORED[key]
    return out

# gunicorn settings for `wfserve serve` (binds, worker class, threads and the worker count come
# from wfserve's own settings and are set after this file is read).
timeout = 120            # seconds a worker may be silent before the master restarts it
graceful_timeout = 30    # seconds in-flight requests get on SIGTERM
keepalive = 75           # seconds an idle keep-alive connection stays open (load balancers: 60)
max_requests = 0         # never recycle the worker: it holds the loaded models
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190  # bytes per header line; larger ones get 400 before any code
proc_name = "wfserve"
control_socket_disable = True  # wfserve stop/scale go through the management API, not gunicornc

"""Running the API under uvicorn, tuned for large uploads (used by ``reward3d serve``).

uvicorn hands the app at most ~64 KB of body per ``receive()`` (it pauses reading above its
HIGH_WATER_LIMIT). A 97 MB video then takes ~1500 trips through the event loop; with a 4 MB
limit it takes a few dozen, and the bare HTTP transfer of 97 MB drops from ~150 ms to ~80 ms
on our machines (loopback TCP: ~50 ms). The price: up to 4 MB buffered per connection.
httptools (the C parser) is used when installed (the ``service`` extra installs it).
"""

from __future__ import annotations

import contextlib

UPLOAD_HIGH_WATER_BYTES = 4 * 2**20


def tune_uvicorn_for_uploads() -> None:
    from uvicorn.protocols.http import h11_impl

    h11_impl.HIGH_WATER_LIMIT = UPLOAD_HIGH_WATER_BYTES
    with contextlib.suppress(ImportError):  # httptools is optional
        from uvicorn.protocols.http import httptools_impl

        httptools_impl.HIGH_WATER_LIMIT = UPLOAD_HIGH_WATER_BYTES


def uvicorn_config(app, *, host: str, port: int, log_level: str = "info", **options):
    """uvicorn's configuration for our app: large-upload tuning, and the header deadline and
    per-client connection cap of service/api/limits.py (settings from ``app.state``)."""
    import uvicorn

    from service.api.limits import guarded_protocol

    settings = app.state.services.settings
    tune_uvicorn_for_uploads()
    try:
        http = guarded_protocol(header_timeout_s=settings.request_header_timeout_s,
                                max_per_client=settings.max_connections_per_client)  # fmt: skip
    except ImportError:  # no httptools: uvicorn's h11 protocol, without those two limits
        http = "h11"
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=http, **options)


def run_api(app, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; returns (instead of re-raising the signal, as uvicorn does)
    so that the caller can stop workers and Redis afterwards."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    Server(uvicorn_config(app, host=host, port=port, log_level=log_level,
                          timeout_graceful_shutdown=10)).run()  # fmt: skip

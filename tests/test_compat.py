"""gdexp.compat: each use of another library's internals, pinned on the installed versions, so an upgrade that
moves one fails here and not in the middle of a user's command. (Entries added before this file existed are
pinned by the tests of the features that use them.)"""

from __future__ import annotations

import contextlib
import inspect
import socket
import ssl
import threading
from pathlib import Path

import pytest

from gdexp import compat
from tests.conftest import self_signed


def test_mlflow_get_sends_once_and_hands_back_the_transport_error() -> None:
    """MLflow wraps a request that got no answer in an MlflowException holding only its text: compat takes the
    transport's own error back from the exception's context."""
    import requests
    from mlflow.utils.rest_utils import http_request

    assert {"max_retries", "timeout", "raise_on_status"} <= set(inspect.signature(http_request).parameters)
    with socket.socket() as unused:  # bound, never listening: a connection to it is refused
        unused.bind(("127.0.0.1", 0))
        with pytest.raises(requests.ConnectionError) as refused:
            compat.mlflow_get(f"http://127.0.0.1:{unused.getsockname()[1]}", "/health", timeout=5)
    assert compat.transport_problem(refused.value) == "Connection refused"


def test_an_untrusted_certificate_is_said_in_a_few_words(tmp_path: Path) -> None:
    """A TLS listener with a self-signed certificate, which this process does not trust (one handshake)."""
    import requests

    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def handshake() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

        thread = threading.Thread(target=handshake, daemon=True)
        thread.start()
        with pytest.raises(requests.exceptions.SSLError) as untrusted:
            compat.mlflow_get(f"https://127.0.0.1:{listener.getsockname()[1]}", "/health", timeout=5)
        thread.join(timeout=10)
    assert compat.transport_problem(untrusted.value) == "certificate verify failed: self-signed certificate"


def test_the_basic_auth_routes_are_mlflows() -> None:
    from mlflow.server.auth import routes

    assert compat.CURRENT_USER == routes.GET_CURRENT_USER
    assert compat.USER_PERMISSION == routes.GET_USER_PERMISSION


def test_mlflows_password_rule() -> None:
    assert compat.mlflow_password_problem("eleven-char") == "Password must be at least 12 characters."
    assert compat.mlflow_password_problem("twelve-chars") is None

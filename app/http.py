"""Transport: one tuned `requests.Session` per provider, and the one place requests errors are mapped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from app.config import HttpConfig
from app.errors import UpstreamError, UpstreamTimeout


def make_session(http: HttpConfig, verify: bool | str | None = None) -> requests.Session:
    """A pooled session: keep-alive connections, no urllib3 retries (the router retries), proxy/TLS."""
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=http.pool_connections,
        pool_maxsize=http.pool_maxsize,
        max_retries=Retry(total=0, connect=0, read=0, redirect=0, raise_on_status=False),
        pool_block=False,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = http.verify if verify is None else verify
    # The environment's proxy settings apply only when no proxy is configured; an explicit one wins.
    if http.proxy:
        session.proxies = {"http": http.proxy, "https": http.proxy}
        session.trust_env = False
    session.headers.clear()
    session.headers["User-Agent"] = "ai-proxy"
    session.headers["Accept-Encoding"] = "gzip, deflate"
    return session


class SessionPool:
    """One session per (provider, TLS setting), created at start and shared by all threads."""

    def __init__(self, http: HttpConfig) -> None:
        self.http = http
        self._sessions: dict[tuple[str, Any], requests.Session] = {}

    def get(self, provider: str, verify: bool | str | None = None) -> requests.Session:
        key = (provider, verify)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = make_session(self.http, verify)
        return session

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()


def send(
    session: requests.Session,
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    stream: bool,
    model_name: str,
) -> requests.Response:
    """POST and map transport failures to proxy errors whose text never carries the URL."""
    try:
        return session.post(url, data=data, headers=headers, timeout=timeout, stream=stream)
    except requests.Timeout:
        raise UpstreamTimeout(f"Upstream for model {model_name} timed out") from None
    except requests.exceptions.SSLError:
        raise UpstreamError(f"TLS error talking to the upstream of model {model_name}") from None
    except requests.RequestException:
        raise UpstreamError(f"Could not connect to the upstream of model {model_name}") from None

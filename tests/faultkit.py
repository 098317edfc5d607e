"""A small client for Toxiproxy's HTTP API: real network faults between the app and a database.

hack/services/up.sh starts Toxiproxy (built from its pinned Go module) on 127.0.0.1:18474
(``PYNCETTE_TOXIPROXY_PORT``). A test creates its own proxy in front of a real server, points the
app at the proxy's address, and adds or removes *toxics* while the app runs:

* ``blackhole()``: a ``timeout`` toxic with timeout 0 in both directions. Connections stay open
  and every byte is dropped: a half-open connection, as after a failover or a NAT dropping state.
  Data sent meanwhile is lost, so a call in flight never gets its answer, even after ``heal()``.
* ``reset()``: a ``reset_peer`` toxic: every connection is reset (TCP RST) as soon as data flows.
* ``latency(ms)``: every reply is delayed.
* ``slow_close(ms)``: closing a connection is delayed.
* ``heal()``: removes every toxic (the server "answers again").

Used by tests/faults and benchmarks/chaos.py. Only the standard library, synchronous calls.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

API = f"http://127.0.0.1:{os.environ.get('PYNCETTE_TOXIPROXY_PORT', '18474')}"


class ToxiproxyError(RuntimeError):
    pass


def _call(method: str, path: str, body: dict[str, Any] | None = None, *, api: str = API) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - a fixed http:// loopback address
        api + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {e.code}: {e.read()[:300]!r}") from None
    return json.loads(raw) if raw.strip() else None


def available(api: str = API) -> bool:
    try:
        return bool(_call("GET", "/version", api=api))
    except (OSError, ToxiproxyError, ValueError):
        return False


@dataclass
class Proxy:
    """One proxy: ``listen`` is the ``host:port`` the app connects to instead of ``upstream``."""

    name: str
    listen: str
    upstream: str
    api: str = API

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def url_for(self, url: str) -> str:
        """``url`` (redis://, postgresql://, mysql://) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}"))

    def _toxic(self, kind: str, stream: str, attributes: dict[str, Any]) -> None:
        _call(
            "POST",
            f"/proxies/{self.name}/toxics",
            {"name": f"{kind}_{stream}", "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes},
            api=self.api,
        )

    def blackhole(self) -> None:
        for stream in ("upstream", "downstream"):
            self._toxic("timeout", stream, {"timeout": 0})

    def reset(self) -> None:
        self._toxic("reset_peer", "upstream", {"timeout": 0})

    def latency(self, milliseconds: int) -> None:
        self._toxic("latency", "downstream", {"latency": milliseconds, "jitter": 0})

    def slow_close(self, milliseconds: int) -> None:
        for stream in ("upstream", "downstream"):
            self._toxic("slow_close", stream, {"delay": milliseconds})

    def toxics(self) -> list[str]:
        return [toxic["name"] for toxic in _call("GET", f"/proxies/{self.name}/toxics", api=self.api) or []]

    def heal(self) -> None:
        for name in self.toxics():
            _call("DELETE", f"/proxies/{self.name}/toxics/{name}", api=self.api)

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: every connection is closed and new ones are refused (the server is "gone")."""
        _call("POST", f"/proxies/{self.name}", {"enabled": enabled}, api=self.api)

    def delete(self) -> None:
        _call("DELETE", f"/proxies/{self.name}", api=self.api)


def create_proxy(upstream_url: str, *, prefix: str = "pyncette", api: str = API) -> Proxy:
    """A new proxy on a free loopback port in front of the server of ``upstream_url``."""
    parts = urlsplit(upstream_url)
    upstream = f"{parts.hostname or '127.0.0.1'}:{parts.port}"
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    created = _call("POST", "/proxies", {"name": name, "listen": "127.0.0.1:0", "upstream": upstream}, api=api)
    return Proxy(name=name, listen=created["listen"], upstream=upstream, api=api)

"""Download one URL for ingest, safely by default.

A manifest is untrusted input: its URLs must not turn the platform into a proxy into its own
network (SSRF). So, for every hop (redirects are followed here, one by one):

- only `http` and `https` are accepted, and at most `max_redirects` hops;
- the host name is resolved once and every address it resolves to must be public: loopback,
  private (RFC 1918, unique-local), link-local (which holds the cloud metadata address
  169.254.169.254), shared (100.64/10, Alibaba's metadata), multicast, reserved and unspecified
  addresses are refused, IPv4-mapped IPv6 included, unless they lie in `allow_networks`
  (tests, a private mirror);
- the connection goes to the address that was checked, never to a second resolution of the
  name (DNS rebinding); TLS still verifies the certificate against the name;
- proxy environment variables (`HTTP_PROXY`, …) are ignored: only `proxy`, when configured, is
  used, and then the proxy connects onwards itself;
- one deadline covers the whole transfer (every hop, retry and byte): a watchdog shuts the
  socket when it passes, so a server that drips bytes (headers or body) is cut there, and each
  socket operation also has its own short timeout. The size cap counts bytes as they arrive.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_REDIRECTS = {301, 302, 303, 307, 308}
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 65536


class FetchError(Exception):
    """A reason, worded for a person, why a URL's bytes cannot be had."""


class _Transient(Exception):
    """A failure worth retrying (connection reset, 503 …)."""


@dataclass(frozen=True)
class FetchOptions:
    """How URLs are downloaded. `timeout_s` bounds each socket operation, `deadline_s` the
    whole download; `allow_networks` (CIDR strings) are reachable although not public."""

    timeout_s: float = 10.0
    deadline_s: float = 120.0
    max_bytes: int = 100 * 1024 * 1024
    retries: int = 2
    backoff_s: float = 0.5
    max_redirects: int = 5
    allow_networks: tuple[str, ...] = ()
    proxy: str | None = None
    user_agent: str = "sticker-curation-ingest/0.1"


def blocked_reason(address: str, allow_networks: Sequence[str] = ()) -> str | None:
    """Why `address` may not be fetched from, or None when it may."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in allow_networks:
        if ip in ipaddress.ip_network(network, strict=False):
            return None
    for test, name in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local (cloud metadata lives here)"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not publicly routable"),
    ):
        if test:
            return f"{ip} is a {name} address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch_url(
    url: str, options: FetchOptions | None = None, *, resolver: Resolver = system_resolver
) -> bytes:
    """The bytes at `url`, or FetchError with a readable reason. Transient failures (reset
    connections, 5xx, 429) are retried with exponential backoff inside the same deadline."""
    options = options or FetchOptions()
    deadline = time.monotonic() + options.deadline_s
    last = "no attempt made"
    for attempt in range(options.retries + 1):
        if attempt:
            pause = options.backoff_s * 2 ** (attempt - 1)
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        try:
            return _follow(url, options, deadline, resolver)
        except _Transient as exc:
            last = str(exc)
    attempts = options.retries + 1
    raise FetchError(f"download failed after {attempts} attempt{'s' * (attempts > 1)}: {last}")


def _follow(url: str, options: FetchOptions, deadline: float, resolver: Resolver) -> bytes:
    current = url
    for hop in range(options.max_redirects + 1):
        status, location, body = _one_hop(current, options, deadline, resolver, hop > 0)
        if status not in _REDIRECTS:
            return body
        if not location:
            raise FetchError(f"HTTP {status} redirect without a Location header")
        current = urllib.parse.urljoin(current, location)
    raise FetchError(f"more than {options.max_redirects} redirects")


def _target(url: str, redirected: bool) -> tuple[str, str, int, str]:
    where = f"redirect to {url[:200]}" if redirected else url[:200]
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"{where}: only http and https URLs are fetched")
    if not parts.hostname:
        raise FetchError(f"{where}: the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(f"{where}: bad port ({exc})") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port, path


def _one_hop(
    url: str, options: FetchOptions, deadline: float, resolver: Resolver, redirected: bool
) -> tuple[int, str | None, bytes]:
    scheme, host, port, path = _target(url, redirected)
    where = f"redirect to {url[:200]}" if redirected else url[:200]
    addresses = resolver(host, port)
    if not addresses:
        raise FetchError(f"{where}: host {host!r} resolves to no address")
    for address in addresses:
        reason = blocked_reason(address, options.allow_networks)
        if reason:
            raise FetchError(
                f"{where}: refused, {host} resolves to {reason} (set INGEST_URL_ALLOW_NETWORKS "
                "to fetch from it)"
            )
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(f"download took longer than {options.deadline_s:g} s")
    connection = _connection(scheme, host, port, addresses[0], options, remaining)
    watchdog = threading.Timer(remaining, _shut, args=(connection,))
    watchdog.daemon = True
    watchdog.start()
    try:
        target = url if options.proxy and scheme == "http" else path
        connection.request(
            "GET",
            target,
            headers={
                "User-Agent": options.user_agent,
                "Accept-Encoding": "identity",
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("Location"), b""
        if response.status != 200:
            message = f"HTTP {response.status} {response.reason}"
            if response.status in _RETRYABLE_STATUS:
                raise _Transient(message)
            raise FetchError(message)
        return response.status, None, _read_body(response, options, deadline)
    except (FetchError, _Transient):
        raise
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise FetchError(f"download took longer than {options.deadline_s:g} s") from exc
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    finally:
        watchdog.cancel()
        connection.close()


def _read_body(response: http.client.HTTPResponse, options: FetchOptions, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > options.max_bytes:
        raise FetchError(
            f"URL content is {_size(int(declared))}, above the {_size(options.max_bytes)} limit"
        )
    chunks: list[bytes] = []
    received = 0
    while True:
        if time.monotonic() >= deadline:
            raise FetchError(f"download took longer than {options.deadline_s:g} s")
        # read1 returns after one receive, so the deadline is checked however slowly bytes come.
        chunk = response.read1(_CHUNK)
        if not chunk:
            break
        received += len(chunk)
        if received > options.max_bytes:
            raise FetchError(
                f"URL content exceeds the {_size(options.max_bytes)} limit (download stopped)"
            )
        chunks.append(chunk)
    if time.monotonic() >= deadline:
        raise FetchError(f"download took longer than {options.deadline_s:g} s")
    return b"".join(chunks)


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to stop
            sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked; the Host header keeps the name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _connection(
    scheme: str, host: str, port: int, address: str, options: FetchOptions, remaining: float
) -> http.client.HTTPConnection:
    timeout = min(options.timeout_s, remaining)
    if options.proxy:
        proxy = urllib.parse.urlsplit(options.proxy)
        proxy_host, proxy_port = proxy.hostname or "", proxy.port or 3128
        if scheme == "https":
            tunnel = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout)
            tunnel.set_tunnel(host, port)
            return tunnel
        return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
    if scheme == "https":
        return _PinnedHTTPSConnection(host, port, address, timeout)
    return _PinnedHTTPConnection(host, port, address, timeout)


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MiB" if size >= 1_048_576 else f"{size:,} bytes"

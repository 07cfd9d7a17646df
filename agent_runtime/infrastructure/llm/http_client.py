"""The HTTP client the model client talks through: httpx, on aiohttp's transport or its own."""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any, Literal, get_args

import httpx

from agent_runtime.infrastructure.llm.aiohttp_transport import aiohttp_transport

HttpTransport = Literal["aiohttp", "httpx"]
HTTP_TRANSPORTS: tuple[HttpTransport, ...] = get_args(HttpTransport)

_KEEPALIVE_SECONDS = 30.0


def create_http_client(
    base_url: str,
    *,
    transport: HttpTransport = "aiohttp",
    connect_timeout: float = 10.0,
    read_timeout: float = 300.0,
    max_connections: int = 1000,
) -> httpx.AsyncClient:
    """The one HTTP client the process shares between model clients of the endpoint at
    `base_url` (the caller closes it: `await client.aclose()`).

    transport: "aiohttp" sends the requests through aiohttp's connection pool (less CPU per
    answer: docs/benchmarks/model-client-cpu.md); "httpx" through httpx's own (httpcore).
    read_timeout bounds the silence between two bytes, not the whole answer: a model may
    think for minutes before its first token, then stream for many more. Every streaming
    turn holds a connection for its whole answer, so max_connections bounds how many turns
    talk to the model at once (the others wait for a connection, up to connect_timeout).
    The proxy is the one the environment names for base_url (proxy_for): ValueError for one
    that cannot be used.
    """
    proxy_url = proxy_for(base_url)
    proxy = httpx.Proxy(proxy_url) if proxy_url else None
    ssl_context = ssl.create_default_context()  # the system's CA bundle (SSL_CERT_FILE/_DIR apply)
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=_KEEPALIVE_SECONDS,
    )
    if transport == "aiohttp":
        sender = aiohttp_transport(limits=limits, ssl_context=ssl_context, proxy=proxy)
    elif transport == "httpx":
        sender = httpx.AsyncHTTPTransport(
            verify=ssl_context, limits=limits, proxy=proxy, trust_env=False
        )
    else:
        raise ValueError(f"unknown HTTP transport {transport!r}: one of {HTTP_TRANSPORTS}")
    return ModelHttpClient(
        transport=sender,
        timeout=httpx.Timeout(
            connect=connect_timeout,
            read=read_timeout,
            write=read_timeout,
            pool=connect_timeout,  # waiting for a free connection
        ),
        # Off: the proxy is chosen above, once, and ~/.netrc must not add credentials.
        trust_env=False,
        # A redirect means a wrong base_url; following it would resend the key elsewhere.
        follow_redirects=False,
    )


# What httpx accepts as cookies (its own alias is private).
_CookieTypes = httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]


class _SetCookieOnlyJar(httpx.Cookies):
    """httpx's cookie jar, handed only the responses that set a cookie. httpx hands it every
    response, and the jar reads one through urllib adaptors whose making costs ~20 µs (of
    ~0.5 ms a streamed answer); a model endpoint rarely sets a cookie, and given a response
    without Set-Cookie the jar does nothing anyway."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class ModelHttpClient(httpx.AsyncClient):
    """httpx.AsyncClient with _SetCookieOnlyJar as its `cookies`. The client reads and fills
    its jar through that public property (httpx 0.28-0.29); should it stop, cookies would go
    unsent: tests/integration/test_openai_compatible_client.py checks that a cookie the
    endpoint sets comes back, on both transports."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._jar = _SetCookieOnlyJar(options.get("cookies"))

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: _CookieTypes) -> None:
        self._jar = _SetCookieOnlyJar(cookies)


def proxy_for(url: str) -> str | None:
    """The proxy that HTTP_PROXY, HTTPS_PROXY or ALL_PROXY name for `url`, unless NO_PROXY
    exempts its host (urllib's rules). ValueError for a proxy that is not an HTTP proxy
    (e.g. socks5://): the client would speak HTTP to it, and every model call would fail
    without saying why."""
    proxies = urllib.request.getproxies()
    parsed = urllib.parse.urlsplit(url)
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or (parsed.hostname and urllib.request.proxy_bypass(parsed.hostname)):
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    named = urllib.parse.urlsplit(proxy)
    if named.scheme not in ("http", "https"):
        raise ValueError(
            f"the proxy the environment names for {parsed.scheme}:// URLs "
            f"({named.scheme}://{named.hostname}:{named.port}) is not an HTTP proxy; "
            "only http:// and https:// proxies are supported"
        )
    return proxy

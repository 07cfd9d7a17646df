"""Who may call the server, and on which addresses: API keys and the development-mode rule.

Keys come from AGENT_RUNTIME_API_KEYS (`key1=tenant-a,key2=tenant-b`) and/or the file named
by AGENT_RUNTIME_API_KEYS_FILE (one `key=tenant` per line; blank lines and lines starting
with `#` are ignored). A key is everything before the last `=`, so base64 padding is fine.
Error messages name the setting and the entry's position, never the key.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from agent_runtime.domain.quotas import TenantQuota
from agent_runtime.domain.tenants import DEFAULT_TENANT, is_valid_tenant_id
from agent_runtime.quota_config import (
    QuotaConfigError,
    check_quota_tenants,
    is_quota_line,
    parse_tenant_quotas,
)

if TYPE_CHECKING:
    from agent_runtime.api.transport import TlsFiles

log = logging.getLogger("agent_runtime")

LOOPBACK_NAMES = frozenset({"localhost"})
KEYS_VARIABLE = "AGENT_RUNTIME_API_KEYS"
KEYS_FILE_VARIABLE = "AGENT_RUNTIME_API_KEYS_FILE"


class AccessConfigError(ValueError):
    """An API key entry or listen address the server cannot accept (message names where)."""


class ApiKeySettings(BaseModel):
    """Where the API keys come from; neither set: development mode. config.py reads it from
    AGENT_RUNTIME_API_<FIELD>. The keys are read (the file too) when the settings are made,
    so a bad entry stops start-up."""

    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(cached_property,))

    keys: SecretStr | None = None
    keys_file: str | None = None

    @property
    def development_mode(self) -> bool:
        return self.keys is None and self.keys_file is None

    @cached_property
    def by_key(self) -> dict[str, str]:
        """API key -> tenant, from both sources (AccessConfigError naming what is wrong)."""
        inline = self.keys.get_secret_value() if self.keys is not None else None
        return merge_api_keys(
            parse_api_keys(inline, KEYS_VARIABLE) if inline is not None else {},
            load_api_keys_file(self.keys_file, KEYS_FILE_VARIABLE) if self.keys_file else {},
        )

    @cached_property
    def tenant_quotas(self) -> dict[str, TenantQuota]:
        """Tenant -> its quotas: the `quota` lines of the keys file (quota_config.py)."""
        if not self.keys_file:
            return {}
        try:
            text = Path(self.keys_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AccessConfigError(f"{KEYS_FILE_VARIABLE}: cannot read it: {exc}") from None
        quotas = parse_tenant_quotas(text, KEYS_FILE_VARIABLE)
        try:
            check_quota_tenants(quotas, self.by_key)
        except QuotaConfigError as exc:
            raise QuotaConfigError(f"{KEYS_FILE_VARIABLE}: {exc}") from None
        return quotas

    @model_validator(mode="after")
    def _readable(self) -> ApiKeySettings:
        self.by_key  # noqa: B018 (read now: a bad entry is a settings error)
        self.tenant_quotas  # noqa: B018
        return self


def load_api_keys_file(path: str, setting: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessConfigError(f"{setting}: cannot read {path}: {exc}") from None
    try:
        return parse_api_keys_file(text, setting)
    except AccessConfigError as exc:
        raise AccessConfigError(f"{exc} (file {path})") from None


def parse_api_keys(raw: str, setting: str) -> dict[str, str]:
    """`key1=tenant-a,key2=tenant-b` -> {key: tenant}."""
    entries = [(f"entry {n}", part) for n, part in enumerate(raw.split(","), 1) if part.strip()]
    return _collect(entries, setting)


def parse_api_keys_file(text: str, setting: str) -> dict[str, str]:
    """One `key=tenant` per line; `#` starts a comment line; blank lines are skipped, and so
    are quota lines (quota_config.py reads those)."""
    entries = [
        (f"line {n}", line)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#") and not is_quota_line(line.strip())
    ]
    return _collect(entries, setting)


def merge_api_keys(*sources: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in sources:
        for key, tenant in source.items():
            if merged.get(key, tenant) != tenant:
                raise AccessConfigError(
                    f"{KEYS_VARIABLE} and {KEYS_FILE_VARIABLE} give the same key to "
                    f"two tenants ({merged[key]!r} and {tenant!r}); each key belongs to one tenant"
                )
            merged[key] = tenant
    return merged


def _collect(entries: Iterable[tuple[str, str]], setting: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for where, entry in entries:
        key, equals, tenant = entry.strip().rpartition("=")
        key, tenant = key.strip(), tenant.strip()
        if not equals or not key:
            raise AccessConfigError(f"{setting}, {where}: expected key=tenant")
        if not key.isprintable() or any(c.isspace() for c in key) or not key.isascii():
            raise AccessConfigError(
                f"{setting}, {where}: the key must be printable ASCII without spaces "
                "(it travels in a request header)"
            )
        if not is_valid_tenant_id(tenant):
            raise AccessConfigError(
                f"{setting}, {where}: tenant {tenant!r} must be 1-64 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        if keys.get(key, tenant) != tenant:
            raise AccessConfigError(
                f"{setting}, {where}: this key is already given for tenant {keys[key]!r}; "
                "each key belongs to one tenant"
            )
        keys[key] = tenant
    if not keys:
        # Asked for keys but got none (an unpopulated secret mount, say): refusing to start
        # beats falling back to development mode, where nothing is authenticated.
        raise AccessConfigError(f"{setting} is set but holds no key=tenant entry")
    return keys


def listen_host(listen: str) -> str:
    """The host part of `host:port`, without IPv6 brackets ("" for `:port`)."""
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(listen: str) -> bool:
    """Reachable from this machine only: 127.0.0.0/8, ::1, localhost (or a unix socket)."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen_host(listen)
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0-like wildcards are addresses; other names may be anything


def log_access_mode(keys: ApiKeySettings, listen: str, tls: TlsFiles) -> None:
    """Says at start-up who may call: anyone (development mode), or holders of API keys."""
    if keys.development_mode:
        log.warning(
            "development mode: no API keys configured, so there is no authentication and every "
            "call acts for tenant %r; listening on loopback only",
            DEFAULT_TENANT,
        )
        return
    log.info(
        "API keys configured: %d keys for %d tenants%s",
        len(keys.by_key),
        len(set(keys.by_key.values())),
        ", mutual TLS" if tls.client_ca_file else ", TLS" if tls.enabled else "",
    )
    if not tls.enabled and not is_loopback(listen):
        log.warning(
            "serving %s without TLS: API keys cross the network in clear text unless a "
            "proxy in front terminates TLS (AGENT_RUNTIME_TLS_CERT_FILE/_KEY_FILE)",
            listen,
        )

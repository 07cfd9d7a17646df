"""Tenant quotas in the API keys file: `quota <tenant> name=value...` lines beside the keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_runtime.cli import _parser
from agent_runtime.config import ConfigError, Settings
from agent_runtime.domain.quotas import (
    TenantQuota,
    too_many_requests,
    too_many_running,
    too_many_tokens,
)
from agent_runtime.server_commands import settings_from

KEYS = """\
# keys, then quotas
k-infra=team-infra
k-web=team-web
quota team-infra tokens_per_day=2000000 concurrent_turns=4 requests_per_minute=120
quota   team-web   concurrent_turns=1
"""


def test_quota_lines_are_read_beside_the_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(KEYS)
    settings = Settings.from_env({"AGENT_RUNTIME_API_KEYS_FILE": str(keys_file)})
    assert settings.api_keys.by_key == {"k-infra": "team-infra", "k-web": "team-web"}
    assert settings.api_keys.tenant_quotas == {
        "team-infra": TenantQuota(2_000_000, 4, 120),
        "team-web": TenantQuota(concurrent_turns=1),
    }
    settings.check()
    # The same through `serve --api-keys-file`.
    args = _parser().parse_args(["serve", "--api-keys-file", str(keys_file)])
    assert settings_from(args).api_keys.tenant_quotas == settings.api_keys.tenant_quotas


def test_a_keys_file_without_quota_lines_reads_as_before(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("k1=tenant-a\nquota=tenant-b\n")  # a key named "quota" is a key
    settings = Settings.from_env({"AGENT_RUNTIME_API_KEYS_FILE": str(keys_file)})
    assert settings.api_keys.by_key == {"k1": "tenant-a", "quota": "tenant-b"}
    assert settings.api_keys.tenant_quotas == {}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("quota team-web", "no limit given"),
        ("quota team-web concurrent_turns=0", "concurrent_turns must be a whole number, 1 or"),
        ("quota team-web tokens_per_day=lots", "tokens_per_day must be a whole number"),
        ("quota team-web tokens_per_day=2²", "tokens_per_day must be a whole number"),
        ("quota team-web tokens_per_day=\u0663", "tokens_per_day must be a whole number"),
        ("quota team-web tokens_per_day=" + "9" * 5000, "tokens_per_day must be a whole number"),
        ("quota team-web max_tokens=3", "'max_tokens=3' is not name=value"),
        ("quota team-web concurrent_turns", "is not name=value"),
        ("quota team-web concurrent_turns=1 concurrent_turns=2", "concurrent_turns is given twice"),
        ("quota bad!tenant concurrent_turns=1", "is not a tenant id"),
        ("quota team-web concurrent_turns=1\nquota team-web tokens_per_day=5", "line 4: tenant"),
        ("quota team-other concurrent_turns=1", "tenants no API key acts for: team-other"),
    ],
)
def test_a_bad_quota_line_stops_start_up_naming_the_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"k-infra=team-infra\nk-web=team-web\n{line}\n")
    with pytest.raises(ConfigError, match=problem) as caught:
        Settings.from_env({"AGENT_RUNTIME_API_KEYS_FILE": str(keys_file)}).check()
    assert "AGENT_RUNTIME_API_KEYS_FILE" in str(caught.value)


NOW = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)


def test_each_quota_refuses_at_its_limit_and_says_when_to_retry() -> None:
    assert too_many_running("t", 2, 1) is None
    busy = too_many_running("t", 2, 2)
    assert busy is not None and busy.reason == "CONCURRENT_TURNS_QUOTA_EXCEEDED"
    assert busy.retry_after == 1.0 and busy.violation.subject == "tenant:t"

    assert too_many_requests("t", 3, 2, NOW, NOW) is None
    rate = too_many_requests("t", 3, 3, NOW.replace(hour=17, minute=59, second=20), NOW)
    assert rate is not None and rate.reason == "REQUEST_RATE_QUOTA_EXCEEDED"
    assert rate.retry_after == 20.0  # the oldest of the minute leaves it then

    assert too_many_tokens("t", 100, 99, NOW) is None
    tokens = too_many_tokens("t", 100, 100, NOW)
    assert tokens is not None and tokens.reason == "TOKEN_QUOTA_EXCEEDED"
    assert tokens.retry_after == 6 * 3600  # until midnight UTC
    assert tokens.metadata == {"tenant_id": "t", "quota": "tokens_per_day", "limit": "100"}

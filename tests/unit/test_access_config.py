"""API keys, development mode, TLS and transport settings: parsing and the rules between them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from agent_runtime.access_config import ApiKeySettings, is_loopback
from agent_runtime.api.auth import ApiKeys, presented_key
from agent_runtime.api.transport import TlsFiles, Transport
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.config import ConfigError, ServerSettings, Settings

SECRET = "s3cret-key-value-0123456789"

# Every test here reads the settings from a clean environment (no AGENT_RUNTIME_* of the
# machine's); Settings.from_env(overrides) then reads only what the test gives.
pytestmark = pytest.mark.usefixtures("environment")


def test_keys_from_the_variable_and_the_file_are_merged(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "# ops team, rotated 2026-11\n"
        "\n"
        "  file-key-1 = tenant-b  \n"
        "padded-key== =tenant-c\n"
        "key1=tenant-a\n"  # the same key and tenant as in the variable: fine
    )
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_API_KEYS": "key1=tenant-a, key2=tenant-a,",
            "AGENT_RUNTIME_API_KEYS_FILE": str(keys_file),
        }
    )
    assert settings.api_keys.by_key == {
        "key1": "tenant-a",
        "key2": "tenant-a",
        "file-key-1": "tenant-b",
        "padded-key==": "tenant-c",
    }
    assert not settings.api_keys.development_mode
    assert "key1" not in repr(settings) and "file-key-1" not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "mentions"),
    [
        (f"{SECRET}", "entry 1: expected key=tenant"),
        (f"a=tenant-a,{SECRET}=", "entry 2: tenant '' must be"),
        (f"{SECRET}=bad tenant!", "entry 1: tenant 'bad tenant!' must be"),
        (f"=tenant-a,{SECRET}=x", "entry 1: expected key=tenant"),
        (f"{SECRET} x=tenant-a", "printable ASCII without spaces"),
        (
            f"{SECRET}=tenant-a,{SECRET}=tenant-b",
            "entry 2: this key is already given for tenant 'tenant-a'",
        ),
    ],
)
def test_bad_keys_are_refused_naming_the_entry_but_never_the_key(raw: str, mentions: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"AGENT_RUNTIME_API_KEYS": raw})
    message = str(caught.value)
    assert mentions in message
    assert "AGENT_RUNTIME_API_KEYS" in message
    assert SECRET not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_bad_keys_file_names_the_line(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\nok=tenant-a\n{SECRET}\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"AGENT_RUNTIME_API_KEYS_FILE": str(keys_file)})
    assert "AGENT_RUNTIME_API_KEYS_FILE, line 3: expected key=tenant" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"AGENT_RUNTIME_API_KEYS_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/tmp/agent-runtime.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.1.2.3:50051", False),
        ("example.com:50051", False),
    ],
)
def test_loopback_addresses(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_development_mode_refuses_non_loopback_addresses() -> None:
    Settings(server=ServerSettings(listen="127.0.0.1:0")).check()
    with pytest.raises(ConfigError) as caught:
        Settings(server=ServerSettings(listen="0.0.0.0:0")).check()
    assert "no API keys are configured" in str(caught.value)
    assert "loopback" in str(caught.value)
    # With keys, any address: whether TLS is needed too is the deployment's call (a proxy or
    # mesh may terminate it); the server warns when it is missing.
    keys = ApiKeySettings(keys=SecretStr(f"{SECRET}=tenant-a"))
    Settings(server=ServerSettings(listen="0.0.0.0:0"), api_keys=keys).check()


@pytest.mark.parametrize(
    ("tls", "mentions"),
    [
        ({"cert_file": "c.pem"}, "set both or neither"),
        ({"key_file": "k.pem"}, "set both or neither"),
        ({"client_ca_file": "ca.pem"}, "mutual TLS"),
    ],
)
def test_tls_settings_go_together(tls: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions):
        Settings(tls=TlsFiles.model_validate(tls)).check()


def test_the_receive_limit_must_exceed_the_largest_message() -> None:
    settings = Settings(
        turns=TurnSettings(max_message_bytes=1000),
        transport=Transport(max_receive_message_bytes=1000),
    )
    with pytest.raises(ConfigError, match="larger than AGENT_RUNTIME_MAX_MESSAGE_BYTES"):
        settings.check()
    read = Settings.from_env(
        {
            "AGENT_RUNTIME_MAX_MESSAGE_BYTES": "1000",
            "AGENT_RUNTIME_GRPC_MAX_RECEIVE_MESSAGE_BYTES": "1000",
        }
    )
    with pytest.raises(ConfigError, match="larger than AGENT_RUNTIME_MAX_MESSAGE_BYTES"):
        read.check()


def test_transport_options_name_the_grpc_arguments() -> None:
    options = dict(Transport(max_concurrent_streams_per_connection=7).options())
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.max_concurrent_streams"] == 7
    assert "grpc.max_concurrent_streams" not in dict(Transport().options())


def test_keys_resolve_to_their_tenant_and_are_never_shown() -> None:
    keys = ApiKeys({SECRET: "tenant-a", "other-key": "tenant-b"})
    assert keys.tenant_for(SECRET) == "tenant-a"
    assert keys.tenant_for("other-key") == "tenant-b"
    assert keys.tenant_for(SECRET[:-1]) is None
    assert keys.tenant_for(SECRET + "x") is None
    assert keys.tenant_for("") is None
    assert SECRET not in repr(keys)
    assert ApiKeys({}).development_mode and not keys.development_mode


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"x-api-key": "abc"}, "abc"),
        ({"authorization": "Bearer abc", "x-api-key": "other"}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_the_key_is_taken_from_bearer_or_x_api_key(metadata: dict[str, str], key: str) -> None:
    assert presented_key(metadata) == key


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENT_RUNTIME_API_KEYS": " , "}, "AGENT_RUNTIME_API_KEYS"),
        ({"AGENT_RUNTIME_API_KEYS_FILE": "EMPTY"}, "AGENT_RUNTIME_API_KEYS_FILE"),
    ],
)
def test_keys_asked_for_but_absent_stop_start_up_instead_of_disabling_auth(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# populated by the secret mount\n\n")
    env = {k: str(empty) if v == "EMPTY" else v for k, v in env.items()}
    with pytest.raises(ConfigError, match=f"{named} is set but holds no key=tenant entry"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "name",
    [
        "AGENT_RUNTIME_API_KEYS",
        "AGENT_RUNTIME_API_KEYS_FILE",
        "AGENT_RUNTIME_TLS_CERT_FILE",
        "AGENT_RUNTIME_TLS_KEY_FILE",
        "AGENT_RUNTIME_TLS_CLIENT_CA_FILE",
    ],
)
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_auth_or_tls_variable_set_but_empty_stops_start_up(
    environment: pytest.MonkeyPatch, name: str, empty: str
) -> None:
    # In the environment, as a deployment sets it (an unpopulated secret, say)...
    environment.setenv(name, empty)
    with pytest.raises(ConfigError, match=f"^{name} is set but empty"):
        Settings.from_env()
    environment.delenv(name)
    # ...or as a flag.
    with pytest.raises(ConfigError, match=f"^{name} is set but empty"):
        Settings.from_env({name: empty})

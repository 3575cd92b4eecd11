"""Settings: validated once, bad values named with what they allow, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtlsauth.issuer.settings import DECLARED, ConfigError, Secret, load_settings
from tests.conftest import Home

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MTLSAUTH_PORT": "0"}, "'port' must be an integer from 1 to 65535"),
        ({"MTLSAUTH_PORT": "http"}, "'port'"),
        ({"MTLSAUTH_ISSUER": "http://x"}, "'issuer' must be an https URL"),
        ({"MTLSAUTH_ISSUER": "https://x/?q=1"}, "'issuer'"),
        ({"MTLSAUTH_LOG_LEVEL": "LOUD"}, "one of DEBUG, INFO, WARNING, ERROR"),
        ({"MTLSAUTH_TOKEN_TTL": "5"}, "'token_ttl' must be an integer from 30 to 86400"),
        ({"MTLSAUTH_DATABASE_URL": "mysql://x"}, "'database_url'"),
        ({"MTLSAUTH_TLS_CERT": "/nonexistent.pem"}, "'tls_cert' names a file that does not exist"),
        ({"MTLSAUTH_COLOUR": "blue"}, "unknown setting(s) 'colour'"),
        ({"MTLSAUTH_DEFAULT_AUDIENCE": "relative"}, "'default_audience'"),
        (
            {"MTLSAUTH_TLS_SESSION_TICKETS": "9"},
            "'tls_session_tickets' must be an integer from 0 to 8",
        ),
    ],
)
def test_bad_settings_are_named(home: Home, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(home.path, environ=env)
    assert message in str(excinfo.value)


def test_environment_overrides_file(home: Home) -> None:
    settings = load_settings(
        home.path, environ={"MTLSAUTH_TOKEN_TTL": "120", "MTLSAUTH_HOST": "::1"}
    )
    assert settings.token_ttl == 120
    assert settings.hosts == ("::1",)
    assert load_settings(home.path, environ={}).tls_session_tickets == 1
    tickets = load_settings(home.path, environ={"MTLSAUTH_TLS_SESSION_TICKETS": "0"})
    assert tickets.tls_session_tickets == 0


def test_missing_home(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="mtlsauth init"):
        load_settings(f"{tmp_path}/nothing", environ={})


def test_secrets_never_in_repr(home: Home) -> None:
    settings = load_settings(home.path, environ={})
    raw = settings.secret_key.get()
    assert raw.hex() not in repr(settings)
    assert str(raw) not in repr(settings)
    assert repr(Secret(b"hunter2")) == "Secret('**********')"
    assert "hunter2" not in f"{Secret(b'hunter2')}"


def test_settings_are_frozen(home: Home) -> None:
    import dataclasses

    settings = load_settings(home.path, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_command_variables_are_not_settings(home: Home) -> None:
    """Secrets for commands and the worker marker share the MTLSAUTH_ prefix, not the settings."""
    env = {
        "MTLSAUTH_CA_PASSPHRASE": "x",
        "MTLSAUTH_CLIENT_SECRET": "y",
        "MTLSAUTH_P12_PASSWORD": "z",
        "MTLSAUTH_WORKER": "0",
        "MTLSAUTH_HOME": "/elsewhere",
    }
    assert load_settings(home.path, environ=env).port == home.port


def test_database_url_is_a_secret(home: Home) -> None:
    """A PostgreSQL URL may carry a password: never in a repr, a str or an error."""
    url = "postgresql://svc:hunter2@127.0.0.1:5432/auth"
    settings = load_settings(home.path, environ={"MTLSAUTH_DATABASE_URL": url})
    assert settings.database_url.get() == url
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(home.path, environ={"MTLSAUTH_DATABASE_URL": "mysql://svc:hunter2@db/auth"})
    assert "'database_url'" in str(excinfo.value)
    assert "hunter2" not in str(excinfo.value)


def _readme_defaults() -> dict[str, str]:
    """setting → default cell of README's configuration table (a row may list several)."""
    section = README.read_text().split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        names_cell, default_cell = row.split(" | ")[:2]
        names = re.findall(r"`([^`]+)`", names_cell)
        cells = default_cell.split(", ") if len(names) > 1 else [default_cell]
        assert len(cells) == len(names), row
        for name, cell in zip(names, cells, strict=True):
            assert name not in defaults, f"{name} has two rows"
            defaults[name] = cell
    return defaults


def _shown(default: object) -> str:
    """A declared default as the README writes it."""
    if default is None:
        return "unset"
    if default == "":
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def test_readme_table_matches_the_declared_settings() -> None:
    """Every declared setting has a row with its default, and every row is a declared setting."""
    readme = _readme_defaults()
    assert set(readme) - set(DECLARED) == set(), "README rows that are not settings"
    assert set(DECLARED) - set(readme) == set(), "settings missing from README"
    assert {name: _shown(spec.default) for name, spec in DECLARED.items()} == readme

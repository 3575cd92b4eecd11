"""Settings: read once at start-up from ``<home>/mtlsauth.toml`` and ``MTLSAUTH_*`` variables.

Environment variables win over the file (``MTLSAUTH_PORT=9443`` overrides ``port``). Every value
is validated; a bad one fails at start with a message naming the setting and what it allows.
Relative paths are resolved against the home directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mtlsauth.core.fetch import AddressPolicy
from mtlsauth.core.peer import (
    HEADER_FORMATS,
    XFCC_MODES,
    HeaderFormat,
    ProxyConfig,
    XfccMode,
    parse_networks,
)

__all__ = ["CONFIG_FILE", "ConfigError", "Secret", "Settings", "load_settings"]

CONFIG_FILE: Final = "mtlsauth.toml"
ENV_PREFIX: Final = "MTLSAUTH_"
N = TypeVar("N", int, float)
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """A setting is missing or has a value outside what it allows."""


class Secret:
    """A value that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def get(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one mtlsauth home."""

    home: Path
    issuer: str
    hosts: tuple[str, ...]
    port: int
    mtls_port: int | None
    database_url: str = dataclasses.field(repr=False)  # may carry a password
    tls_cert: Path
    tls_key: Path
    client_ca: Path
    signing_key: Path
    secret_key: Secret = dataclasses.field(repr=False)
    crl: Path | None = None
    token_ttl: int = 600
    default_audience: str = ""
    reload_interval: float = 0.5
    keepalive_timeout: float = 15.0
    max_body_bytes: int = 16384
    log_level: str = "INFO"
    max_connection_age: float = 60.0
    tls_session_tickets: int = 1
    crl_warn_hours: float = 48.0
    audit_log: Path | None = None
    strict_assertion_audience: bool = False
    assertion_max_lifetime: int = 300
    jwks_uri_cafile: Path | None = None
    throttle_limit: int = 10
    throttle_window: float = 60.0
    throttle_block: float = 60.0
    log_format: str = "text"
    trusted_proxies: tuple[str, ...] = ()
    client_cert_header: str = "Client-Cert"
    client_cert_format: HeaderFormat = "rfc9440"
    jwks_uri_allow_private: tuple[str, ...] = ()
    jwks_uri_timeout: float = 3.0
    client_cert_xfcc_mode: XfccMode = "sanitize_set"
    client_address_header: str = ""
    request_header_timeout: float = 10.0
    request_body_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    max_header_size: int = 8190
    max_headers: int = 64
    max_connections_per_source: int = 64
    max_connections: int = 4096
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1")

    @property
    def proxy(self) -> ProxyConfig | None:
        """Believe a client-certificate header only from these proxies (off when none)."""
        if not self.trusted_proxies:
            return None
        return ProxyConfig(
            trusted=parse_networks(self.trusted_proxies),
            header=self.client_cert_header,
            fmt=self.client_cert_format,
            xfcc_mode=self.client_cert_xfcc_mode,
            address_header=self.client_address_header or None,
        )

    @property
    def jwks_uri_policy(self) -> AddressPolicy:
        """Where clients' ``jwks_uri`` fetches may connect: global unicast addresses, plus the
        non-global networks ``jwks_uri_allow_private`` lists."""
        return AddressPolicy(allowed=parse_networks(self.jwks_uri_allow_private))

    @property
    def mtls_base_url(self) -> str | None:
        """The base URL of the certificate-requiring listener (RFC 8705 §5 aliases)."""
        if self.mtls_port is None:
            return None
        parts = urlsplit(self.issuer)
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return urlunsplit((parts.scheme, f"{host}:{self.mtls_port}", parts.path, "", ""))

    @property
    def assertion_audiences(self) -> frozenset[str]:
        """Decision D2: the issuer, or the token endpoint (or its mTLS alias)."""
        if self.strict_assertion_audience:
            return frozenset({self.issuer})
        accepted = {self.issuer, f"{self.issuer}/token"}
        if self.mtls_base_url is not None:
            accepted.add(f"{self.mtls_base_url}/token")
        return frozenset(accepted)

    @property
    def audience(self) -> str:
        """The ``aud`` of tokens whose client names no audience of its own."""
        return self.default_audience or self.issuer


# --- validators ---------------------------------------------------------------------------


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"setting {name!r} must be a non-empty string, got {value!r}")
    return value


def _as_number(kind: type[N], lo: N, hi: N) -> Callable[[str, Any], N]:
    """A validator for an int or float setting within [lo, hi]."""
    noun = "an integer" if kind is int else "a number"

    def check(name: str, value: Any) -> N:
        message = f"setting {name!r} must be {noun} from {lo} to {hi}, got {value!r}"
        if isinstance(value, bool):
            raise ConfigError(message)
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(message) from None
        if not lo <= number <= hi:
            raise ConfigError(message)
        return number

    return check


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise ConfigError(f"setting {name!r} must be true or false, got {value!r}")


def _as_optional_str(name: str, value: Any) -> str:
    return "" if value == "" else _as_str(name, value)


def _as_log_format(name: str, value: Any) -> str:
    if value not in ("text", "json"):
        raise ConfigError(f"setting {name!r} must be one of text, json, got {value!r}")
    return str(value)


def _as_hosts(name: str, value: Any) -> tuple[str, ...]:
    """Listen addresses, comma-separated: ``127.0.0.1,::1`` or ``0.0.0.0`` or a host name."""
    hosts = tuple(h.strip() for h in _as_str(name, value).split(",") if h.strip())
    if not hosts:
        raise ConfigError(f"setting {name!r} must list at least one address, got {value!r}")
    return hosts


def _as_networks(name: str, value: Any) -> tuple[str, ...]:
    """Comma-separated addresses or CIDRs; empty means none."""
    if isinstance(value, list):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    else:
        raise ConfigError(f"setting {name!r} must be a list of CIDRs, got {value!r}")
    try:
        parse_networks(items)
    except ValueError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from exc
    return tuple(v.strip() for v in items)


def _as_header_format(name: str, value: Any) -> str:
    if value not in HEADER_FORMATS:
        raise ConfigError(
            f"setting {name!r} must be one of {', '.join(HEADER_FORMATS)}, got {value!r}"
        )
    return str(value)


#: Envoy ``forward_client_cert_details`` modes whose header cannot be believed, and why.
_UNSAFE_XFCC_MODES: Final[Mapping[str, str]] = {
    "forward_only": "Envoy forwards a client-supplied header unchanged, so any client names any "
    "certificate",
    "always_forward_only": "Envoy forwards a client-supplied header unchanged, so any client "
    "names any certificate",
    "sanitize": "Envoy removes the header and forwards no certificate",
}


def _as_xfcc_mode(name: str, value: Any) -> str:
    """Envoy's mode in lower case: SANITIZE_SET (one element) or APPEND_FORWARD (the last)."""
    text = str(value).strip().lower()
    allowed = ", ".join(XFCC_MODES)
    if text in _UNSAFE_XFCC_MODES:
        raise ConfigError(
            f"setting {name!r}: {value!r} is unsafe ({_UNSAFE_XFCC_MODES[text]}); "
            f"configure Envoy with one of {allowed} and set it here"
        )
    if text not in XFCC_MODES:
        raise ConfigError(f"setting {name!r} must be one of {allowed}, got {value!r}")
    return text


def _as_header_name(name: str, value: Any) -> str:
    text = _as_str(name, value)
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", text):
        raise ConfigError(f"setting {name!r} must be an HTTP header name, got {value!r}")
    return text


def _as_optional_header_name(name: str, value: Any) -> str:
    return "" if value == "" else _as_header_name(name, value)


def _as_issuer(name: str, value: Any) -> str:
    """RFC 8414 §2: an https URL with no query or fragment."""
    text = _as_str(name, value)
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"setting {name!r} must be an https URL with a host and no query or fragment, "
            f"got {value!r}"
        )
    return text.rstrip("/")


def _as_log_level(name: str, value: Any) -> str:
    text = _as_str(name, value).upper()
    if text not in LOG_LEVELS:
        raise ConfigError(f"setting {name!r} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


def _as_database_url(name: str, value: Any) -> str:
    text = _as_str(name, value)
    if not text.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            f"setting {name!r} must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB, "
            f"got {text.split('@')[-1]!r}"
        )
    return text


def _as_audience(name: str, value: Any) -> str:
    if value == "":
        return ""
    text = _as_str(name, value)
    if not urlsplit(text).scheme:
        raise ConfigError(f"setting {name!r} must be an absolute URI, got {value!r}")
    return text


_VALIDATORS: Final[Mapping[str, Callable[[str, Any], Any]]] = {
    "issuer": _as_issuer,
    "host": _as_hosts,
    "port": _as_number(int, 1, 65535),
    "mtls_port": _as_number(int, 1, 65535),
    "database_url": _as_database_url,
    "tls_cert": _as_str,
    "tls_key": _as_str,
    "client_ca": _as_str,
    "signing_key": _as_str,
    "secret_key_file": _as_str,
    "token_ttl": _as_number(int, 30, 86400),
    "default_audience": _as_audience,
    "reload_interval": _as_number(float, 0.05, 2.0),
    "keepalive_timeout": _as_number(float, 1.0, 3600.0),
    "max_body_bytes": _as_number(int, 1024, 1048576),
    "log_level": _as_log_level,
    "crl": _as_optional_str,
    "audit_log": _as_optional_str,
    "strict_assertion_audience": _as_bool,
    "assertion_max_lifetime": _as_number(int, 30, 3600),
    "jwks_uri_cafile": _as_optional_str,
    "throttle_limit": _as_number(int, 1, 100000),
    "throttle_window": _as_number(float, 1.0, 86400.0),
    "throttle_block": _as_number(float, 1.0, 86400.0),
    "log_format": _as_log_format,
    "max_connection_age": _as_number(float, 1.0, 86400.0),
    "tls_session_tickets": _as_number(int, 0, 8),
    "crl_warn_hours": _as_number(float, 0.0, 8760.0),
    "trusted_proxies": _as_networks,
    "client_cert_header": _as_header_name,
    "client_cert_format": _as_header_format,
    "jwks_uri_allow_private": _as_networks,
    "jwks_uri_timeout": _as_number(float, 0.5, 30.0),
    "client_cert_xfcc_mode": _as_xfcc_mode,
    "client_address_header": _as_optional_header_name,
    "request_header_timeout": _as_number(float, 1.0, 300.0),
    "request_body_timeout": _as_number(float, 1.0, 300.0),
    "tls_handshake_timeout": _as_number(float, 1.0, 120.0),
    "max_header_size": _as_number(int, 1024, 65536),
    "max_headers": _as_number(int, 8, 1024),
    "max_connections_per_source": _as_number(int, 1, 100000),
    "max_connections": _as_number(int, 16, 1000000),
    "metrics_port": _as_number(int, 1, 65535),
    "metrics_host": _as_str,
    "metrics_allow": _as_networks,
}

_DEFAULTS: Final[Mapping[str, Any]] = {
    "issuer": "https://localhost:8443",
    "host": "127.0.0.1,::1",
    "port": 8443,
    "database_url": "sqlite:///mtlsauth.db",
    "tls_cert": "tls/chain.pem",
    "tls_key": "tls/key.pem",
    "crl": "ca/crl.pem",
    "audit_log": "audit.jsonl",
    "client_ca": "ca/client-ca.pem",
    "signing_key": "keys/signing.pem",
    "secret_key_file": "secret.key",
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"no {CONFIG_FILE} in {path.parent}: run 'mtlsauth init --home {path.parent}' first"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


#: MTLSAUTH_* variables that are not settings (the home, secrets for commands, worker marker).
NOT_SETTINGS: Final = frozenset(
    {"HOME", "WORKER", "CLIENT_SECRET", "CA_PASSPHRASE", "CA_PASSPHRASE_FILE", "P12_PASSWORD"}
)


def _env_values(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for key, value in environ.items():
        name = key[len(ENV_PREFIX) :]
        if key.startswith(ENV_PREFIX) and name not in NOT_SETTINGS:
            values[name.lower()] = value
    return values


def _resolve(home: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else home / path


def load_settings(home: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings of ``home`` once; raises ConfigError naming the setting."""
    home = Path(home).expanduser().resolve()
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = dict(_DEFAULTS)
    raw.update(_read_file(home / CONFIG_FILE))
    raw.update(_env_values(env))
    unknown = sorted(set(raw) - set(_VALIDATORS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known settings: {', '.join(sorted(_VALIDATORS))}"
        )
    values = {name: _VALIDATORS[name](name, value) for name, value in raw.items()}
    if values.get("mtls_port") == values["port"]:
        raise ConfigError("setting 'mtls_port' must differ from 'port'")
    metrics_port = values.get("metrics_port")
    if metrics_port is not None and metrics_port in (values["port"], values.get("mtls_port")):
        raise ConfigError("setting 'metrics_port' must differ from 'port' and 'mtls_port'")

    database_url = values["database_url"]
    if database_url.startswith("sqlite:///"):
        database_url = f"sqlite:///{_resolve(home, database_url.removeprefix('sqlite:///'))}"
    key_path = _resolve(home, values.pop("secret_key_file"))
    try:
        secret_key = Secret(bytes.fromhex(key_path.read_text().strip()))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"setting 'secret_key_file' must name a readable file of hex bytes: {key_path}"
        ) from exc
    if len(secret_key.get()) < 32:
        raise ConfigError(f"setting 'secret_key_file' must hold at least 32 bytes: {key_path}")

    settings = Settings(
        home=home,
        issuer=values["issuer"],
        hosts=values["host"],
        port=values["port"],
        mtls_port=values.get("mtls_port"),
        database_url=database_url,
        tls_cert=_resolve(home, values["tls_cert"]),
        tls_key=_resolve(home, values["tls_key"]),
        client_ca=_resolve(home, values["client_ca"]),
        signing_key=_resolve(home, values["signing_key"]),
        secret_key=secret_key,
        token_ttl=values.get("token_ttl", 600),
        default_audience=values.get("default_audience", ""),
        reload_interval=values.get("reload_interval", 0.5),
        keepalive_timeout=values.get("keepalive_timeout", 15.0),
        max_body_bytes=values.get("max_body_bytes", 16384),
        log_level=values.get("log_level", "INFO"),
        crl=_resolve(home, values["crl"]) if values.get("crl") else None,
        max_connection_age=values.get("max_connection_age", 60.0),
        tls_session_tickets=values.get("tls_session_tickets", 1),
        crl_warn_hours=values.get("crl_warn_hours", 48.0),
        audit_log=_resolve(home, values["audit_log"]) if values.get("audit_log") else None,
        strict_assertion_audience=values.get("strict_assertion_audience", False),
        assertion_max_lifetime=values.get("assertion_max_lifetime", 300),
        jwks_uri_cafile=(
            _resolve(home, values["jwks_uri_cafile"]) if values.get("jwks_uri_cafile") else None
        ),
        throttle_limit=values.get("throttle_limit", 10),
        throttle_window=values.get("throttle_window", 60.0),
        throttle_block=values.get("throttle_block", 60.0),
        log_format=values.get("log_format", "text"),
        trusted_proxies=values.get("trusted_proxies", ()),
        client_cert_header=values.get("client_cert_header", "Client-Cert"),
        client_cert_format=values.get("client_cert_format", "rfc9440"),
        jwks_uri_allow_private=values.get("jwks_uri_allow_private", ()),
        jwks_uri_timeout=values.get("jwks_uri_timeout", 3.0),
        client_cert_xfcc_mode=values.get("client_cert_xfcc_mode", "sanitize_set"),
        client_address_header=values.get("client_address_header", ""),
        request_header_timeout=values.get("request_header_timeout", 10.0),
        request_body_timeout=values.get("request_body_timeout", 10.0),
        tls_handshake_timeout=values.get("tls_handshake_timeout", 10.0),
        max_header_size=values.get("max_header_size", 8190),
        max_headers=values.get("max_headers", 64),
        max_connections_per_source=values.get("max_connections_per_source", 64),
        max_connections=values.get("max_connections", 4096),
        metrics_port=values.get("metrics_port"),
        metrics_host=values.get("metrics_host", "127.0.0.1"),
        metrics_allow=values.get("metrics_allow", ("127.0.0.0/8", "::1")),
    )
    if settings.client_address_header and not settings.trusted_proxies:
        raise ConfigError(
            "setting 'client_address_header' is believed only from 'trusted_proxies': "
            "set those too, or leave it empty"
        )
    for name in ("tls_cert", "tls_key", "client_ca", "signing_key"):
        path = getattr(settings, name)
        if not path.is_file():
            raise ConfigError(f"setting {name!r} names a file that does not exist: {path}")
    logging.getLogger(__name__).debug("settings loaded: %r", settings)
    return settings

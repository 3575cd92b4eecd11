"""Settings: read once at start-up from ``<home>/mtlsauth.toml`` and ``MTLSAUTH_*`` variables.

Each setting is declared once, as a field of :class:`Settings`::

    port: int = field(metadata=_setting(8443, _PORT))

gives its name, its type, its default (as an operator would write it in the file) and its
:class:`Parser`, which validates a value, resolves a relative path against the home, and says
what it allows. Everything else is derived from those fields, collected in :data:`DECLARED`:

- the loader takes each default, overridden by the file, overridden by ``MTLSAUTH_<NAME>``
  (``MTLSAUTH_PORT=9443`` overrides ``port``), and parses it;
- a bad value stops the start with ``setting 'port' must be <what the parser allows>, got ...``;
- tests/test_config.py pins the README's configuration table to the declarations.

A setting is named after its field unless the file holds something other than the value
(``host`` fills ``hosts``; ``secret_key_file`` fills ``secret_key``). Only the rules between
settings (distinct ports, ...) are written apart, in ``_check_together``. A secret parser returns
a :class:`Secret`, and its value is never repeated in an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar
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

__all__ = [
    "CONFIG_FILE",
    "DECLARED",
    "ConfigError",
    "Parser",
    "Secret",
    "Settings",
    "Spec",
    "load_settings",
]

CONFIG_FILE: Final = "mtlsauth.toml"
ENV_PREFIX: Final = "MTLSAUTH_"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
#: MTLSAUTH_* variables that are not settings (the home, secrets for commands, worker marker).
NOT_SETTINGS: Final = frozenset(
    {"HOME", "WORKER", "CLIENT_SECRET", "CA_PASSPHRASE", "CA_PASSPHRASE_FILE", "P12_PASSWORD"}
)
_SPEC: Final = "mtlsauth.setting"  # the key of a field's metadata that holds its Spec

T = TypeVar("T")
E = TypeVar("E")
N = TypeVar("N", int, float)
S = TypeVar("S", bound=str)


class ConfigError(Exception):
    """A setting is missing or has a value outside what it allows."""


class Refused(ValueError):
    """A parser's own sentence, for when "must be <allowed>" would not say why."""


class Secret(Generic[T]):
    """A value that never shows itself in a repr, a str or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def get(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Parser(Generic[T]):
    """Turns a value from the file or the environment into a setting's value.

    ``parse(value, home)`` raises ValueError or TypeError when ``value`` is not ``allowed``.
    """

    allowed: str
    parse: Callable[[Any, Path], T]
    secret: bool = False  # the value may hold a password: never repeat it in an error


#: A default as written in the TOML file; ``None`` is "unset" (a key no file can hold).
Default = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Spec:
    """The declaration of one setting; ``name`` and ``attr`` are filled in from its field."""

    default: Default
    parser: Parser[Any]
    name: str = ""  # the file key, and MTLSAUTH_<NAME>
    attr: str = ""  # the Settings field it fills


def _setting(default: Default, parser: Parser[Any], *, name: str = "") -> Mapping[str, Spec]:
    """The ``field(metadata=...)`` that declares a setting of Settings."""
    return {_SPEC: Spec(default, parser, name)}


# --- parsers ------------------------------------------------------------------------------


def _optional(parser: Parser[T], empty: E) -> Parser[T | E]:
    """``""`` (or unset) means ``empty``: the feature is off or falls back to another value."""

    def parse(value: Any, home: Path) -> T | E:
        return empty if value is None or value == "" else parser.parse(value, home)

    return Parser(f"{parser.allowed} (or empty)", parse, parser.secret)


def _text_of(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(value)
    return value


_TEXT: Final = Parser("a non-empty string", lambda value, _: _text_of(value))


def _number(kind: type[N], lo: N, hi: N) -> Parser[N]:
    noun = "an integer" if kind is int else "a number"

    def parse(value: Any, _: Path) -> N:
        if isinstance(value, bool):  # TOML's true is no port number
            raise TypeError(value)
        number = kind(value)
        if not lo <= number <= hi:
            raise ValueError(value)
        return number

    bounds = f"{lo} to {hi}" if kind is int else f"{lo:g} to {hi:g}"  # 3600, not 3600.0
    return Parser(f"{noun} from {bounds}", parse)


def _integer(lo: int, hi: int) -> Parser[int]:
    return _number(int, lo, hi)


def _seconds(lo: float, hi: float) -> Parser[float]:
    return _number(float, lo, hi)


def _boolean(value: Any, _: Path) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise ValueError(value)


_BOOLEAN: Final = Parser("true or false", _boolean)


def _choice(options: tuple[S, ...], fold: Callable[[str], str] = str) -> Parser[S]:
    """One of ``options``, compared after ``fold`` (e.g. upper-casing)."""

    def parse(value: Any, _: Path) -> S:
        text = fold(_text_of(value))
        for option in options:
            if option == text:
                return option
        raise ValueError(value)

    return Parser(f"one of {', '.join(options)}", parse)


#: Envoy ``forward_client_cert_details`` modes whose header cannot be believed, and why.
_UNSAFE_XFCC_MODES: Final[Mapping[str, str]] = {
    "forward_only": "Envoy forwards a client-supplied header unchanged, so any client names any "
    "certificate",
    "always_forward_only": "Envoy forwards a client-supplied header unchanged, so any client "
    "names any certificate",
    "sanitize": "Envoy removes the header and forwards no certificate",
}


def _lowered(text: str) -> str:
    return text.strip().lower()


def _xfcc_mode() -> Parser[XfccMode]:
    """Envoy's mode in lower case: SANITIZE_SET (one element) or APPEND_FORWARD (the last)."""
    modes = _choice(XFCC_MODES, _lowered)

    def parse(value: Any, home: Path) -> XfccMode:
        why = _UNSAFE_XFCC_MODES.get(_lowered(str(value)))
        if why:
            raise Refused(
                f"refuses {value!r}, which is unsafe ({why}): "
                f"configure Envoy with {modes.allowed} and set it here"
            )
        return modes.parse(value, home)

    return Parser(modes.allowed, parse)


def _hosts(value: Any, _: Path) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in _text_of(value).split(",") if h.strip())
    if not hosts:
        raise ValueError(value)
    return hosts


_HOSTS: Final = Parser("comma-separated listen addresses or names", _hosts)


def _networks(value: Any, _: Path) -> tuple[str, ...]:
    """A TOML list or a comma-separated string; empty means none."""
    if isinstance(value, list):
        items = [str(v).strip() for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        raise TypeError(value)
    parse_networks(items)  # ValueError names the bad one
    return tuple(items)


_NETWORKS: Final = Parser("comma-separated addresses or CIDRs", _networks)


def _header_name(value: Any, _: Path) -> str:
    text = _text_of(value)
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", text):
        raise ValueError(value)
    return text


_HEADER_NAME: Final = Parser("an HTTP header name", _header_name)


def _issuer(value: Any, _: Path) -> str:
    """RFC 8414 §2: an https URL with no query or fragment."""
    text = _text_of(value)
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(value)
    return text.rstrip("/")


_ISSUER: Final = Parser("an https URL with a host and no query or fragment", _issuer)


def _absolute_uri(value: Any, _: Path) -> str:
    text = _text_of(value)
    if not urlsplit(text).scheme:
        raise ValueError(value)
    return text


_ABSOLUTE_URI: Final = Parser("an absolute URI", _absolute_uri)


def _resolve(home: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else home / path


def _path(value: Any, home: Path) -> Path:
    return _resolve(home, _text_of(value))


def _file(value: Any, home: Path) -> Path:
    path = _path(value, home)
    if not path.is_file():
        raise Refused(f"names a file that does not exist: {path}")
    return path


_PATH: Final = Parser("a path (relative to the home)", _path)
_FILE: Final = Parser("an existing file (relative to the home)", _file)


def _database_url(value: Any, home: Path) -> Secret[str]:
    text = _text_of(value)
    if text.startswith("sqlite:///"):
        return Secret(f"sqlite:///{_resolve(home, text.removeprefix('sqlite:///'))}")
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("unsupported scheme")
    return Secret(text)


_DATABASE_URL: Final = Parser(
    "sqlite:///PATH or postgresql://USER@HOST:PORT/DB", _database_url, secret=True
)


def _secret_key(value: Any, home: Path) -> Secret[bytes]:
    path = _path(value, home)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        raise Refused(f"must name a readable file of hex bytes: {path}") from None
    if len(key) < 32:
        raise Refused(f"must hold at least 32 bytes: {path}")
    return Secret(key)


_SECRET_KEY: Final = Parser("a file of at least 32 hex-encoded bytes", _secret_key)


_PORT: Final = _integer(1, 65535)


# --- the settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The validated configuration of one mtlsauth home (README: Configuration reference)."""

    home: Path  # not a setting: where the file is, and what relative paths are relative to
    issuer: str = field(metadata=_setting("https://localhost:8443", _ISSUER))
    hosts: tuple[str, ...] = field(metadata=_setting("127.0.0.1,::1", _HOSTS, name="host"))
    port: int = field(metadata=_setting(8443, _PORT))
    mtls_port: int | None = field(metadata=_setting(None, _optional(_PORT, None)))
    database_url: Secret[str] = field(metadata=_setting("sqlite:///mtlsauth.db", _DATABASE_URL))
    tls_cert: Path = field(metadata=_setting("tls/chain.pem", _FILE))
    tls_key: Path = field(metadata=_setting("tls/key.pem", _FILE))
    client_ca: Path = field(metadata=_setting("ca/client-ca.pem", _FILE))
    signing_key: Path = field(metadata=_setting("keys/signing.pem", _FILE))
    secret_key: Secret[bytes] = field(
        metadata=_setting("secret.key", _SECRET_KEY, name="secret_key_file")
    )
    crl: Path | None = field(metadata=_setting("ca/crl.pem", _optional(_PATH, None)))
    token_ttl: int = field(metadata=_setting(600, _integer(30, 86400)))
    default_audience: str = field(metadata=_setting("", _optional(_ABSOLUTE_URI, "")))
    reload_interval: float = field(metadata=_setting(0.5, _seconds(0.05, 2.0)))
    keepalive_timeout: float = field(metadata=_setting(15, _seconds(1.0, 3600.0)))
    max_body_bytes: int = field(metadata=_setting(16384, _integer(1024, 1048576)))
    log_level: str = field(metadata=_setting("INFO", _choice(LOG_LEVELS, str.upper)))
    max_connection_age: float = field(metadata=_setting(60, _seconds(1.0, 86400.0)))
    tls_session_tickets: int = field(metadata=_setting(1, _integer(0, 8)))
    crl_warn_hours: float = field(metadata=_setting(48, _seconds(0.0, 8760.0)))
    audit_log: Path | None = field(metadata=_setting("audit.jsonl", _optional(_PATH, None)))
    strict_assertion_audience: bool = field(metadata=_setting(False, _BOOLEAN))
    assertion_max_lifetime: int = field(metadata=_setting(3600, _integer(30, 3600)))
    jwks_uri_cafile: Path | None = field(metadata=_setting("", _optional(_PATH, None)))
    throttle_limit: int = field(metadata=_setting(10, _integer(1, 100000)))
    throttle_window: float = field(metadata=_setting(60, _seconds(1.0, 86400.0)))
    throttle_block: float = field(metadata=_setting(60, _seconds(1.0, 86400.0)))
    log_format: str = field(metadata=_setting("text", _choice(("text", "json"))))
    trusted_proxies: tuple[str, ...] = field(metadata=_setting("", _NETWORKS))
    client_cert_header: str = field(metadata=_setting("Client-Cert", _HEADER_NAME))
    client_cert_format: HeaderFormat = field(metadata=_setting("rfc9440", _choice(HEADER_FORMATS)))
    jwks_uri_allow_private: tuple[str, ...] = field(metadata=_setting("", _NETWORKS))
    jwks_uri_timeout: float = field(metadata=_setting(3, _seconds(0.5, 30.0)))
    client_cert_xfcc_mode: XfccMode = field(metadata=_setting("sanitize_set", _xfcc_mode()))
    client_address_header: str = field(metadata=_setting("", _optional(_HEADER_NAME, "")))
    request_header_timeout: float = field(metadata=_setting(10, _seconds(1.0, 300.0)))
    request_body_timeout: float = field(metadata=_setting(10, _seconds(1.0, 300.0)))
    tls_handshake_timeout: float = field(metadata=_setting(10, _seconds(1.0, 120.0)))
    max_header_size: int = field(metadata=_setting(8190, _integer(1024, 65536)))
    max_headers: int = field(metadata=_setting(64, _integer(8, 1024)))
    max_connections_per_source: int = field(metadata=_setting(64, _integer(1, 100000)))
    max_connections: int = field(metadata=_setting(4096, _integer(16, 1000000)))
    metrics_port: int | None = field(metadata=_setting(None, _optional(_PORT, None)))
    metrics_host: str = field(metadata=_setting("127.0.0.1", _TEXT))
    metrics_allow: tuple[str, ...] = field(metadata=_setting("127.0.0.0/8,::1", _NETWORKS))
    federated_assertion_max_lifetime: int = field(metadata=_setting(3600, _integer(60, 86400)))
    trust_refresh_interval: float = field(metadata=_setting(300, _seconds(0.5, 86400.0)))
    trust_fetch_timeout: float = field(metadata=_setting(3, _seconds(0.5, 30.0)))
    spiffe_bundle_min_refresh: float = field(metadata=_setting(30, _seconds(0.5, 3600.0)))
    enrollment: bool = field(metadata=_setting(True, _BOOLEAN))
    ca_dir: Path = field(metadata=_setting("ca", _PATH))

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


def _declared() -> dict[str, Spec]:
    """Each field's Spec by setting name, with its name and field filled in."""
    specs = {}
    for declared in dataclasses.fields(Settings):
        if _SPEC in declared.metadata:
            found = declared.metadata[_SPEC]
            name = found.name or declared.name
            specs[name] = dataclasses.replace(found, name=name, attr=declared.name)
    return specs


#: Every setting by name (its file key; MTLSAUTH_<NAME> in the environment), in field order.
DECLARED: Final[Mapping[str, Spec]] = _declared()


# --- the loader ---------------------------------------------------------------------------


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


def _env_values(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for key, value in environ.items():
        name = key[len(ENV_PREFIX) :]
        if key.startswith(ENV_PREFIX) and name not in NOT_SETTINGS:
            values[name.lower()] = value
    return values


def _parse(spec: Spec, value: Any, home: Path) -> Any:
    """The parsed value; a bad one becomes a ConfigError naming the setting and what it allows."""
    try:
        return spec.parser.parse(value, home)
    except Refused as exc:
        raise ConfigError(f"setting {spec.name!r} {exc}") from None
    except (TypeError, ValueError):
        # A secret value (a URL with a password) is not repeated: errors reach logs.
        got = "" if spec.parser.secret else f", got {value!r}"
        raise ConfigError(f"setting {spec.name!r} must be {spec.parser.allowed}{got}") from None


def _check_together(settings: Settings) -> None:
    """The rules between settings; each setting's own rule is its parser."""
    if settings.mtls_port == settings.port:
        raise ConfigError("setting 'mtls_port' must differ from 'port'")
    if settings.metrics_port is not None and settings.metrics_port in (
        settings.port,
        settings.mtls_port,
    ):
        raise ConfigError("setting 'metrics_port' must differ from 'port' and 'mtls_port'")
    if settings.client_address_header and not settings.trusted_proxies:
        raise ConfigError(
            "setting 'client_address_header' is believed only from 'trusted_proxies': "
            "set those too, or leave it empty"
        )


def load_settings(home: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings of ``home`` once; raises ConfigError naming the setting."""
    home = Path(home).expanduser().resolve()
    given: dict[str, Any] = _read_file(home / CONFIG_FILE)
    given.update(_env_values(os.environ if environ is None else environ))
    unknown = sorted(set(given) - set(DECLARED))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known settings: {', '.join(sorted(DECLARED))}"
        )
    values = {
        spec.attr: _parse(spec, given.get(name, spec.default), home)
        for name, spec in DECLARED.items()
    }
    settings = Settings(home=home, **values)
    _check_together(settings)
    logging.getLogger(__name__).debug("settings loaded: %r", settings)
    return settings

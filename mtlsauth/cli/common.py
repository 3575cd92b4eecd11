"""Shared CLI plumbing: the home directory, settings, output, and the error → exit-code rule.

Exit codes, every command: 0 done; 1 refused or failed (the reason on stderr); 2 usage or
configuration (a bad flag value, a missing or unreadable home, a bad setting).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

from mtlsauth.issuer.settings import ConfigError, Settings, load_settings

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "CLIError",
    "add_home",
    "emit",
    "home_of",
    "port_number",
    "read_bounded",
    "read_secret_file",
    "readable_file",
    "render_text",
    "settings_of",
    "url",
    "warn",
]

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class CLIError(Exception):
    """A command was refused; the message goes to stderr and the exit code is ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="the mtlsauth home directory (env MTLSAUTH_HOME)")


def home_of(args: argparse.Namespace) -> Path:
    home = args.home or os.environ.get("MTLSAUTH_HOME")
    if not home:
        raise CLIError("no home directory: pass --home DIR or set MTLSAUTH_HOME", EXIT_USAGE)
    return Path(home).expanduser().resolve()


def settings_of(args: argparse.Namespace) -> Settings:
    """The home's settings; a missing, unreadable or badly configured home is exit 2."""
    home = home_of(args)
    if home.exists() and not home.is_dir():
        raise CLIError(f"the home {home} is not a directory", EXIT_USAGE)
    try:
        return load_settings(home)
    except ConfigError as exc:
        raise CLIError(f"configuration error: {exc}", EXIT_USAGE) from exc
    except OSError as exc:
        raise CLIError(f"cannot read the home {home}: {_os_reason(exc)}", EXIT_USAGE) from exc


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def port_number(value: str) -> int:
    """An argparse ``type``: a TCP port, 1-65535 (0 would silently pick a random port)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65535, got {port}")
    return port


#: A secret or a token read from a file or stdin is small; /dev/zero must not fill memory.
MAX_INPUT_BYTES: Final = 65536


def read_bounded(flag: str, stream: BinaryIO) -> str:
    """At most MAX_INPUT_BYTES of UTF-8 text from ``stream``; more is a usage error."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise CLIError(f"{flag}: more than {MAX_INPUT_BYTES} bytes", EXIT_USAGE)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise CLIError(f"{flag}: not UTF-8 text", EXIT_USAGE) from exc


def read_secret_file(flag: str, path: str) -> str:
    """A secret kept on one line of a file (the newline an editor or ``echo`` leaves is not part
    of it), read bounded; a usage error otherwise."""
    try:
        with Path(path).open("rb") as stream:
            secret = read_bounded(flag, stream).rstrip("\r\n")
    except OSError as exc:
        raise CLIError(f"cannot read {flag}: {exc}", EXIT_USAGE) from exc
    if not secret or "\n" in secret or "\r" in secret:
        raise CLIError(f"{flag} must hold the secret on one line", EXIT_USAGE)
    return secret


#: Certificates, key sets and CA bundles given as files are small; a device or a huge file is
#: refused before anything reads it (/dev/zero would fill memory).
MAX_FILE_BYTES: Final = 1 << 20


def url(value: str) -> str:
    """An argparse type: an http(s) URL with a host that parses (an unclosed IPv6 literal is a
    usage error, not a traceback)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - a port outside 0-65535 raises here
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a URL: {value!r} ({exc})") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise argparse.ArgumentTypeError(f"not an http(s) URL with a host: {value!r}")
    return value


def readable_file(flag: str, path: str) -> Path:
    """``path`` if it names a readable regular file of at most MAX_FILE_BYTES, else a usage
    error naming flag and file."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as stream:
            status = os.fstat(stream.fileno())
    except OSError as exc:
        raise CLIError(f"{flag} {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if not stat.S_ISREG(status.st_mode):
        raise CLIError(f"{flag} {path}: not a regular file", EXIT_USAGE)
    if status.st_size > MAX_FILE_BYTES:
        raise CLIError(f"{flag} {path}: larger than {MAX_FILE_BYTES} bytes", EXIT_USAGE)
    return file


def _text(value: Any) -> str:
    """One value for people: ``-`` for nothing, yes/no, lists comma-separated."""
    if value is None or (isinstance(value, str | list | tuple | dict) and not value):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def render_text(data: Any) -> str:
    """``data`` (what --json prints) as ``key: value`` lines; a list of records one per line."""
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                lines.append(f"{key}:")
                lines += [f"  {_text(item)}" for item in value]
            else:
                lines.append(f"{key}: {_text(value)}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(_text(item) for item in data)
    return _text(data)


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print ``data`` as JSON with --json, else ``text`` (or ``render_text(data)``)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        print(text if text is not None else render_text(data))


def warn(message: str) -> None:
    print(message, file=sys.stderr)

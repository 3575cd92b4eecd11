"""Shared CLI plumbing: the home directory, output, and the error → exit-code mapping."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CLIError", "add_home", "emit", "home_of"]


class CLIError(Exception):
    """A command was refused; the message goes to stderr and the exit code is ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="the mtlsauth home directory (env MTLSAUTH_HOME)")


def home_of(args: argparse.Namespace) -> Path:
    home = args.home or os.environ.get("MTLSAUTH_HOME")
    if not home:
        raise CLIError("no home directory: pass --home DIR or set MTLSAUTH_HOME", code=2)
    return Path(home).expanduser().resolve()


def emit(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    """Print ``data`` as JSON with --json, else ``text`` (or a simple key: value rendering)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    elif text is not None:
        print(text)
    elif isinstance(data, dict):
        for key, value in data.items():
            print(f"{key}: {value}")
    else:
        print(data)

"""Certificate serial numbers as operators paste them (RFC 5280 §4.1.2.2: a positive integer).

Tools print one serial many ways: ``openssl x509 -serial`` as upper-case hex padded to whole
octets (``serial=0A1B...``), ``openssl x509 -text`` colon-separated (``0a:1b:...``), others with
``0x``. The inventory keys serials as lower-case hex without leading zeros; every form is
reduced to that, so a serial that starts with a zero nibble is found like any other.
"""

from __future__ import annotations

import re
from typing import Final

from pki.ca import CAError

__all__ = ["normalize_serial"]

# Optional "serial=" (openssl x509 -serial), optional 0x, hex octets optionally joined by ":".
_SERIAL: Final = re.compile(
    r"(?:serial=)?(?:0x)?([0-9a-f]+(?::[0-9a-f]+)*)", re.IGNORECASE | re.ASCII
)
#: RFC 5280 §4.1.2.2: at most 20 octets; generous room for leading zeros and separators.
_MAX_LENGTH: Final = 128


def normalize_serial(text: str) -> str:
    """The inventory's form of a serial given as hex in any common notation; CAError when it
    is not one."""
    value = text.strip()
    found = _SERIAL.fullmatch(value) if len(value) <= _MAX_LENGTH else None
    if found is None:
        raise CAError(f"not a serial number: {text!r} (hex, e.g. 0A1B..., 0a:1b:..., or 0x0a1b...)")
    number = int(found.group(1).replace(":", ""), 16)
    if number == 0 or number.bit_length() > 160:
        raise CAError(f"not a serial number: {text!r} (RFC 5280: 1 to 20 octets, positive)")
    return format(number, "x")

"""Prometheus metrics (text exposition format 0.0.4) of the token service, per process, without
dependencies.

* ``mtlsauth_http_requests_total{endpoint,status}``
* ``mtlsauth_token_request_seconds{auth_method}`` — histogram of token request latency
* ``mtlsauth_auth_failures_total{reason}``
* ``mtlsauth_tokens_issued_total{auth_method,bound}``
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Final

__all__ = ["BUCKETS", "Metrics", "labels"]

BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}" if inner else ""


#: Label rendering with the exposition format's escaping, for other renderers of this service.
labels = _labels


class Metrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.failures: defaultdict[str, int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, bool], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sums: defaultdict[str, float] = defaultdict(float)
        self._counts: defaultdict[str, int] = defaultdict(int)

    def request(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def token_latency(self, auth_method: str, seconds: float) -> None:
        buckets = self._buckets.setdefault(auth_method, [0] * len(BUCKETS))
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            buckets[index] += 1
        self._sums[auth_method] += seconds
        self._counts[auth_method] += 1

    def auth_failure(self, reason: str) -> None:
        self.failures[reason] += 1

    def token_issued(self, auth_method: str, *, bound: bool) -> None:
        self.tokens[(auth_method, bound)] += 1

    def render(self) -> str:
        out = [
            "# HELP mtlsauth_http_requests_total HTTP requests by endpoint and status.",
            "# TYPE mtlsauth_http_requests_total counter",
        ]
        for (endpoint, status), n in sorted(self.requests.items()):
            out.append(
                f"mtlsauth_http_requests_total{_labels(endpoint=endpoint, status=str(status))} {n}"
            )
        out += [
            "# HELP mtlsauth_token_request_seconds Token request latency by auth method.",
            "# TYPE mtlsauth_token_request_seconds histogram",
        ]
        for method, buckets in sorted(self._buckets.items()):
            cumulative = 0
            for bound, n in zip(BUCKETS, buckets, strict=True):
                cumulative += n
                labels = _labels(auth_method=method, le=repr(bound))
                out.append(f"mtlsauth_token_request_seconds_bucket{labels} {cumulative}")
            total = self._counts[method]
            out.append(
                f"mtlsauth_token_request_seconds_bucket{_labels(auth_method=method, le='+Inf')} "
                f"{total}"
            )
            out.append(
                f"mtlsauth_token_request_seconds_sum{_labels(auth_method=method)} "
                f"{self._sums[method]:.6f}"
            )
            out.append(f"mtlsauth_token_request_seconds_count{_labels(auth_method=method)} {total}")
        out += [
            "# HELP mtlsauth_auth_failures_total Failed client authentications by reason.",
            "# TYPE mtlsauth_auth_failures_total counter",
        ]
        for reason, n in sorted(self.failures.items()):
            out.append(f"mtlsauth_auth_failures_total{_labels(reason=reason)} {n}")
        out += [
            "# HELP mtlsauth_tokens_issued_total Access tokens issued.",
            "# TYPE mtlsauth_tokens_issued_total counter",
        ]
        for (method, bound), n in sorted(self.tokens.items()):
            labels = _labels(auth_method=method, bound=str(bound).lower())
            out.append(f"mtlsauth_tokens_issued_total{labels} {n}")
        return "\n".join(out) + "\n"

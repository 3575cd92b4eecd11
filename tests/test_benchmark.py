"""scripts/bench runs end to end (a smoke run: tiny durations, numbers not judged)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_bench_reports_every_scenario_without_errors() -> None:
    # A subprocess: the benchmark pins its own process to cores and installs uvloop.
    out = subprocess.run(
        [sys.executable, "-m", "mtlsauth.bench.benchmark", "--seconds", "0.6", "--rounds", "2",
         "--connections", "4", "--new-connection-clients", "2", "--workers", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rounds"] == 2
    names = [r["scenario"] for r in report["results"]]
    assert len(names) == 8
    for row in report["results"]:
        assert row["requests"] > 0, row
        assert row["errors"] == 0, row
        assert row["cpu_us_per_token"] > 0, row
    assert [len(q["per_round"]) for q in report["ratios"]] == [2, 2, 2, 2]
    assert all(q["all_rounds"] > 0 for q in report["ratios"])
    assert all(c["per_s"] > 0 for c in report["checks"])
    assert any(c["scenario"].startswith("gate check") for c in report["checks"])


def test_bench_refuses_zero_rounds() -> None:
    from mtlsauth.bench.benchmark import main

    with pytest.raises(SystemExit) as excinfo:
        main(["--rounds", "0"])
    assert excinfo.value.code == 2


def test_tls_layer_ab_reports_both_layers_round_by_round() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mtlsauth.bench.benchmark", "--tls-layer-ab", "--seconds", "0.6",
         "--rounds", "2", "--new-connection-clients", "2", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    names = [r["scenario"] for r in report["results"]]
    assert len(names) == 7
    assert sum(name.startswith("pyOpenSSL transport: ") for name in names) == 3
    assert sum(name.startswith("ssl, stateful session tickets: ") for name in names) == 1
    for row in report["results"]:
        assert row["requests"] > 0, row
        assert row["errors"] == 0, row
    assert [len(q["per_round"]) for q in report["ratios"]] == [2, 2, 2, 2, 2]
    assert all(q["all_rounds"] > 0 for q in report["ratios"])
    assert "OpenSSL 3" in report["machine"]["openssl"]
    assert report["checks"] == []


def test_tls_layer_ab_refuses_other_rows(capsys: pytest.CaptureFixture[str]) -> None:
    from mtlsauth.bench.benchmark import main

    with pytest.raises(SystemExit) as excinfo:
        main(["--tls-layer-ab", "--workers"])
    assert excinfo.value.code == 2
    assert "new-connection rows alone" in capsys.readouterr().err

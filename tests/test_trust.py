"""External trust anchors (``mtlsauth trust``): another CA's certificates authenticate
tls_client_auth clients registered with ``--trust NAME``, hot-loaded into a running server;
chains through an intermediate the client sends; no cross-tenant matches."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from mtlsauth.issuer.http.keys import TRUST_REVOCATION
from mtlsauth.issuer.store import open_store
from mtlsauth.issuer.trust.anchors import TrustAnchor
from tests.conftest import Home, Service, cli_json, eventually, fresh_database, run_cli, running
from tests.foreign_pki import ForeignPKI
from tests.test_stores import use_postgres


def trust_add(home: Home, name: str, ca: Path, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = cli_json(
        ["trust", "add", "--home", str(home.path), "--name", name, "--ca", str(ca), *extra]
    )
    return result


@pytest.fixture(scope="module")
def acme() -> ForeignPKI:
    return ForeignPKI.create("Acme")


@pytest.fixture(scope="module")
def globex() -> ForeignPKI:
    return ForeignPKI.create("Globex")


async def test_an_anchor_added_to_a_running_server_authenticates_its_clients(
    home: Home, acme: ForeignPKI, tmp_path: Path
) -> None:
    leaf = acme.issue(tmp_path / "svc", "svc")
    async with running(home) as service:
        # Before the anchor exists the handshake itself refuses the chain.
        with pytest.raises(aiohttp.ClientError):
            await service.token(cert=leaf, client_id="svc")
        await asyncio.to_thread(trust_add, home, "acme", acme.bundle(tmp_path / "acme.pem"))
        await service.home.aadd_client(
            "--auth-method", "tls_client_auth", "--client-id", "svc",
            "--subject-dn", "CN=svc", "--trust", "acme",
        )  # fmt: skip

        async def issued() -> bool:
            try:
                status, body = await service.token(cert=leaf, client_id="svc")
            except OSError:
                return False
            return status == 200 and "access_token" in body

        await eventually(issued, within=3.0)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_an_anchor_reaches_two_servers_on_postgresql(
    home: Home, acme: ForeignPKI, tmp_path: Path, pg_url: str
) -> None:
    """Many servers on one PostgreSQL: the trust_anchors trigger NOTIFYs them all."""
    leaf = acme.issue(tmp_path / "svc", "svc")
    await asyncio.to_thread(use_postgres, home, pg_url)
    other = dataclasses.replace(home.settings, port=unused_port())
    async with running(home) as first, running(home, other) as second:
        await asyncio.to_thread(trust_add, home, "acme", acme.bundle(tmp_path / "acme.pem"))
        await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                               "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
        for service in (first, second):

            async def issued(service: Service = service) -> bool:
                try:
                    status, _ = await service.token(cert=leaf, client_id="svc")
                except aiohttp.ClientError:
                    return False
                return status == 200

            await eventually(issued, within=3.0)


async def test_a_certificate_of_another_anchor_with_the_same_name_is_refused(
    home: Home, acme: ForeignPKI, globex: ForeignPKI, tmp_path: Path
) -> None:
    await asyncio.to_thread(same_names, home, acme, globex, tmp_path)
    acme_leaf = acme.issue(tmp_path / "a", "svc")
    globex_leaf = globex.issue(tmp_path / "g", "svc")
    home_leaf = await asyncio.to_thread(home.issue, "svc")
    async with running(home) as service:
        assert (await service.token(cert=acme_leaf, client_id="acme-svc"))[0] == 200
        assert (await service.token(cert=globex_leaf, client_id="globex-svc"))[0] == 200
        assert (await service.token(cert=home_leaf, client_id="home-svc"))[0] == 200
        for cert, client_id in (
            (globex_leaf, "acme-svc"),
            (home_leaf, "acme-svc"),
            (acme_leaf, "globex-svc"),
            (acme_leaf, "home-svc"),
        ):
            status, body = await service.token(cert=cert, client_id=client_id)
            assert (status, body["error"]) == (401, "invalid_client"), client_id


def same_names(home: Home, acme: ForeignPKI, globex: ForeignPKI, tmp_path: Path) -> None:
    trust_add(home, "acme", acme.bundle(tmp_path / "acme.pem"))
    trust_add(home, "globex", globex.bundle(tmp_path / "globex.pem"))
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "acme-svc",
                    "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
    # The same name under another tenant's anchor is that tenant's client, not a clash.
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "globex-svc",
                    "--subject-dn", "CN=svc", "--trust", "globex")  # fmt: skip
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "home-svc",
                    "--subject-dn", "CN=svc")  # fmt: skip


async def test_a_chain_through_an_intermediate_only_the_client_sends_authenticates(
    home: Home, acme: ForeignPKI, tmp_path: Path
) -> None:
    """The anchor's file holds the root only; the client sends leaf + intermediate, as clients
    do. OpenSSL accepts the chain, and the check of which anchor it chains to builds the path
    through what the client sent."""
    await asyncio.to_thread(
        trust_add, home, "acme", acme.bundle(tmp_path / "acme.pem", with_intermediate=False)
    )
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
    leaf = acme.issue(tmp_path / "svc", "svc")
    async with running(home) as service:
        status, body = await service.token(cert=leaf, client_id="svc")
        assert status == 200, body
        # The leaf alone (no intermediate sent, none in the bundle) has no path: the
        # handshake itself refuses it.
        alone = dataclasses.replace(leaf, chain=leaf.cert)
        with pytest.raises(aiohttp.ClientError):
            await service.token(cert=alone, client_id="svc")


async def test_an_intermediate_of_another_anchor_sent_by_the_client_does_not_chain_to_this_one(
    home: Home, acme: ForeignPKI, globex: ForeignPKI, tmp_path: Path
) -> None:
    """Globex's leaf with the same name, sent with Globex's intermediate: the handshake accepts
    it (Globex is trusted too), but the path it makes ends at Globex's root, not Acme's."""
    await asyncio.to_thread(
        trust_add, home, "acme", acme.bundle(tmp_path / "acme.pem", with_intermediate=False)
    )
    await asyncio.to_thread(
        trust_add, home, "globex", globex.bundle(tmp_path / "globex.pem", with_intermediate=False)
    )
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "g-svc",
                           "--subject-dn", "CN=svc", "--trust", "globex")  # fmt: skip
    impostor = globex.issue(tmp_path / "g", "svc")
    async with running(home) as service:
        assert (await service.token(cert=impostor, client_id="g-svc"))[0] == 200
        status, body = await service.token(cert=impostor, client_id="svc")
        assert (status, body["error"]) == (401, "invalid_client")


def _token_over_a_socket(
    ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None
) -> tuple[int, ssl.SSLSession | None, bool]:
    """One token request on its own TLS connection, resuming ``session`` when given:
    (status, the session to resume next time, whether this one was resumed)."""
    body = b"grant_type=client_credentials&client_id=svc"
    request = (
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(request)
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        return int(response.split(b" ", 2)[1]), tls.session, bool(tls.session_reused)


async def test_a_resumed_session_keeps_the_chain_its_leaf_arrived_with(
    home: Home, acme: ForeignPKI, tmp_path: Path
) -> None:
    """A resumed TLS session carries the leaf but not the intermediates: the ones the leaf
    arrived with in its full handshake still build its path."""
    await asyncio.to_thread(
        trust_add, home, "acme", acme.bundle(tmp_path / "acme.pem", with_intermediate=False)
    )
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
    leaf = acme.issue(tmp_path / "svc", "svc")
    async with running(home) as service:
        ctx = service.ssl_context(leaf)
        first, session, reused = await asyncio.to_thread(_token_over_a_socket, ctx, home.port, None)
        assert (first, reused) == (200, False)
        # A reload of the anchors that keeps their roots (a policy edit, say) keeps the TLS
        # context, so the session stays resumable, and forgets the verified paths.
        trust = service.app[TRUST_REVOCATION].trust
        trust.replace(list(trust.all().values()))
        second, _, reused = await asyncio.to_thread(_token_over_a_socket, ctx, home.port, session)
        assert (second, reused) == (200, True)


def test_trust_commands(home: Home, acme: ForeignPKI, tmp_path: Path) -> None:
    bundle = acme.bundle(tmp_path / "acme.pem")
    added = trust_add(home, "acme", bundle, "--max-stale", "600")
    assert added["name"] == "acme"
    assert len(added["roots"]) == 1
    assert len(added["intermediates"]) == 1
    assert added["max_stale"] == 600
    h = ["--home", str(home.path)]
    assert [a["name"] for a in cli_json(["trust", "list", *h])] == ["acme"]
    assert cli_json(["trust", "show", "acme", *h])["roots"] == added["roots"]
    assert run_cli(["trust", "add", *h, "--name", "acme", "--ca", str(bundle)])[0] == 1
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                    "--subject-dn", "CN=svc", "--trust", "acme")  # fmt: skip
    assert run_cli(["trust", "remove", "acme", *h])[0] == 1  # in use
    assert run_cli(["client", "remove", "svc", *h])[0] == 0
    assert cli_json(["trust", "remove", "acme", *h])["removed"] is True
    assert run_cli(["trust", "show", "acme", *h])[0] == 1
    assert run_cli(["trust", "remove", "acme", *h])[0] == 1


def test_bad_registrations_are_usage_errors(home: Home, acme: ForeignPKI, tmp_path: Path) -> None:
    h = ["--home", str(home.path)]
    leaf = acme.issue(tmp_path / "svc", "svc")
    only_intermediate = tmp_path / "int.pem"
    only_intermediate.write_bytes(
        Path(leaf.chain).read_bytes().split(b"-----END CERTIFICATE-----\n")[1]
    )
    bundle = acme.bundle(tmp_path / "acme.pem")
    for argv in (
        ["--name", "acme", "--ca", str(leaf.cert)],  # not a CA
        ["--name", "acme", "--ca", str(only_intermediate)],  # no root
        ["--name", "acme", "--ca", str(tmp_path / "missing.pem")],
        ["--name", "bad name", "--ca", str(bundle)],
        ["--name", "acme", "--ca", str(bundle), "--crl-url", "ftp://x/crl"],
        ["--name", "acme", "--ca", str(bundle), "--max-stale", "-1"],
    ):
        code, _, err = run_cli(["trust", "add", *h, *argv])
        assert code == 2, (argv, err)
        assert "Traceback" not in err
    # A client naming an anchor that does not exist is refused.
    code, _, _ = run_cli(["client", "add", *h, "--auth-method", "tls_client_auth",
                          "--subject-dn", "CN=svc", "--trust", "nope"])  # fmt: skip
    assert code == 1
    code, _, _ = run_cli(["client", "add", *h, "--auth-method", "client_secret_basic",
                          "--trust", "acme"])  # fmt: skip
    assert code == 2


async def test_anchors_round_trip_and_bump_the_change_marker(
    store_url: str, acme: ForeignPKI, tmp_path: Path
) -> None:
    store = open_store(store_url)
    await store.migrate()
    await store.close()
    store = open_store(store_url)
    await store.open()
    try:
        anchor = TrustAnchor.create(
            name="acme", bundle=acme.bundle(tmp_path / "a.pem").read_bytes(),
            crl_urls=["http://127.0.0.1:1/crl"], crl_from_cdp=True, max_stale=5,
        )  # fmt: skip
        before = await store.change_marker()
        await store.add_trust_anchor(anchor)
        assert await store.change_marker() != before
        (loaded,) = await store.list_trust_anchors()
        assert loaded == anchor
        assert loaded.root_ders == anchor.root_ders
        before = await store.change_marker()
        assert await store.remove_trust_anchor("acme") is True
        assert await store.change_marker() != before
        assert await store.remove_trust_anchor("acme") is False
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with fresh_database() as url:
            yield url

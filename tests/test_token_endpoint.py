"""The token endpoint (RFC 6749 §4.4, §5): secret methods and every error case, over real TLS."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mtlsauth.client import form_encode
from tests.conftest import Home, Service, running

APPENDIX_B_VALUE = " %&+\u00a3\u20ac"
APPENDIX_B_ENCODED = "+%25%26%2B%C2%A3%E2%82%AC"
# client_id is VSCHAR only (RFC 6749 A.1); these are the characters Basic must encode.
ODD_CLIENT_ID = "svc %&+:=x"


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-encode each part (Appendix B), then Basic-encode."""
    raw = f"{form_encode(client_id)}:{form_encode(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def post_raw(
    service: Service, body: str | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Any]:
    return await service.post(data=body, headers={**FORM, **(headers or {})})


@pytest.fixture
def secret_clients(home: Home) -> dict[str, str]:
    basic_client = home.add_client(
        "--auth-method", "client_secret_basic", "--client-id", "b", "--scope", "read write",
        "--audience", "https://api.example.com", "--audience", "https://other.example.com",
    )  # fmt: skip
    post_client = home.add_client(
        "--auth-method", "client_secret_post", "--client-id", "p", "--scope", "read"
    )
    bound = home.add_client(
        "--auth-method", "client_secret_basic", "--client-id", "bound", "--bound-tokens"
    )
    odd = home.add_client("--auth-method", "client_secret_basic", "--client-id", ODD_CLIENT_ID)
    return {
        "b": basic_client["client_secret"],
        "p": post_client["client_secret"],
        "bound": bound["client_secret"],
        "odd": odd["client_secret"],
    }


def test_appendix_b_vector() -> None:
    from mtlsauth.issuer.clientauth import parse_basic
    from mtlsauth.issuer.http.forms import parse_form

    assert form_encode(APPENDIX_B_VALUE) == APPENDIX_B_ENCODED
    form = parse_form(f"value={APPENDIX_B_ENCODED}".encode(), FORM["Content-Type"], None)
    assert form["value"] == (APPENDIX_B_VALUE,)
    header = "Basic " + base64.b64encode(f"a%3Ab:{APPENDIX_B_ENCODED}".encode()).decode()
    assert parse_basic(header) == ("a:b", APPENDIX_B_VALUE)


async def test_client_secret_basic(home: Home, secret_clients: dict[str, str]) -> None:
    secret = secret_clients["b"]
    async with running(home) as service:
        status, headers, body = await post_raw(
            service, "grant_type=client_credentials", {"Authorization": basic("b", secret)}
        )
        assert status == 200, body
        assert headers["Cache-Control"] == "no-store"
        assert headers["Pragma"] == "no-cache"
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "read write"
        assert body["expires_in"] == home.settings.token_ttl

        status, headers, body = await post_raw(
            service, "grant_type=client_credentials", {"Authorization": basic("b", secret + "x")}
        )
        assert (status, body["error"]) == (401, "invalid_client")
        assert headers["WWW-Authenticate"] == 'Basic realm="mtlsauth"'


async def test_basic_credentials_are_appendix_b_decoded(
    home: Home, secret_clients: dict[str, str]
) -> None:
    """A client_id with ' %&+:=' works only when form-encoded before Basic encoding."""
    secret = secret_clients["odd"]
    async with running(home) as service:
        status, _, body = await post_raw(
            service,
            "grant_type=client_credentials",
            {"Authorization": basic(ODD_CLIENT_ID, secret)},
        )
        assert status == 200, body
        raw = base64.b64encode(f"{ODD_CLIENT_ID}:{secret}".encode()).decode()
        status, _, body = await post_raw(
            service, "grant_type=client_credentials", {"Authorization": f"Basic {raw}"}
        )
        # Unencoded, its '%' starts no escape: not form-encoding, a malformed request.
        assert (status, body["error"]) == (400, "invalid_request")


async def test_client_secret_post(home: Home, secret_clients: dict[str, str]) -> None:
    async with running(home) as service:
        status, body = await service.token(client_id="p", client_secret=secret_clients["p"])
        assert status == 200, body
        status, body = await service.token(client_id="p", client_secret="wrong")
        assert (status, body["error"]) == (401, "invalid_client")


async def test_only_the_registered_method(home: Home, secret_clients: dict[str, str]) -> None:
    """Decision D8: a basic client that posts its secret (and vice versa) is invalid_client."""
    async with running(home) as service:
        status, body = await service.token(client_id="b", client_secret=secret_clients["b"])
        assert (status, body["error"]) == (401, "invalid_client")
        status, _, body = await post_raw(
            service,
            "grant_type=client_credentials",
            {"Authorization": basic("p", secret_clients["p"])},
        )
        assert (status, body["error"]) == (401, "invalid_client")


async def test_two_methods_at_once(home: Home, secret_clients: dict[str, str]) -> None:
    async with running(home) as service:
        status, _, body = await post_raw(
            service,
            f"grant_type=client_credentials&client_secret={secret_clients['b']}",
            {"Authorization": basic("b", secret_clients["b"])},
        )
    assert (status, body["error"]) == (400, "invalid_request")


async def test_bound_secret_client(home: Home, secret_clients: dict[str, str]) -> None:
    """A secret client registered for bound tokens: cnf with a certificate, D3 without."""
    from mtlsauth.core.thumbprint import x5t_s256

    cert = home.issue("anything", dns=["anything"])
    auth = {"Authorization": basic("bound", secret_clients["bound"])}
    async with running(home) as service:
        status, _, body = await post_raw(service, "grant_type=client_credentials", auth)
        assert (status, body["error"]) == (400, "invalid_request")
        status, _, body = await service.post(
            data="grant_type=client_credentials", cert=cert, headers={**FORM, **auth}
        )
        assert status == 200, body
        import jwt

        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["cnf"] == {"x5t#S256": x5t_s256(cert.der)}


async def test_unbound_secret_client_with_certificate(
    home: Home, secret_clients: dict[str, str]
) -> None:
    cert = home.issue("anything", dns=["anything"])
    auth = {"Authorization": basic("b", secret_clients["b"])}
    async with running(home) as service:
        status, _, body = await service.post(
            data="grant_type=client_credentials", cert=cert, headers={**FORM, **auth}
        )
    assert status == 200
    import jwt

    assert "cnf" not in jwt.decode(body["access_token"], options={"verify_signature": False})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("grant_type=client_credentials&grant_type=client_credentials", 400, "invalid_request"),
        ("grant_type=client_credentials&scope=read&scope=read", 400, "invalid_request"),
        ("grant_type=client_credentials&scope=&scope=read", 400, "invalid_request"),
        ("scope=read", 400, "invalid_request"),
        ("grant_type=", 400, "invalid_request"),
        ("grant_type=password", 400, "unsupported_grant_type"),
        ("grant_type=authorization_code", 400, "unsupported_grant_type"),
        ("grant_type=client_credentials&scope=admin", 400, "invalid_scope"),
        ("grant_type=client_credentials&scope=read%20admin", 400, "invalid_scope"),
        ("grant_type=client_credentials&scope=read%20%20write", 400, "invalid_scope"),
        ("grant_type=client_credentials&scope=%22read", 400, "invalid_scope"),
        ("grant_type=client_credentials&resource=https://evil.example.com", 400, "invalid_target"),
        ("grant_type=client_credentials&resource=not-a-uri", 400, "invalid_target"),
        ("grant_type=client_credentials&resource=https://%5B::1", 400, "invalid_target"),
        ("grant_type=client_credentials&resource=https://api.example.com%23frag", 400,
         "invalid_target"),
        ("grant_type=client_credentials&client_id=someone-else", 400, "invalid_request"),
        ("grant_type=%FF", 400, "invalid_request"),
        ("grant_type=client_credentials&x=%E2%82", 400, "invalid_request"),
    ],
)  # fmt: skip
async def test_errors(
    home: Home, secret_clients: dict[str, str], body: str, status: int, error: str
) -> None:
    auth = {"Authorization": basic("b", secret_clients["b"])}
    async with running(home) as service:
        got_status, headers, got = await post_raw(service, body, auth)
    assert (got_status, got["error"]) == (status, error)
    assert got["error_description"]
    assert headers["Cache-Control"] == "no-store"


async def test_scope_and_resource_success(home: Home, secret_clients: dict[str, str]) -> None:
    import jwt

    auth = {"Authorization": basic("b", secret_clients["b"])}
    async with running(home) as service:
        status, _, body = await post_raw(
            service,
            "grant_type=client_credentials&scope=write&resource=https%3A%2F%2Fapi.example.com",
            auth,
        )
        assert status == 200, body
        assert body["scope"] == "write"
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["aud"] == "https://api.example.com"
        status, _, body = await post_raw(
            service,
            "grant_type=client_credentials&resource=https://api.example.com"
            "&resource=https://other.example.com",
            auth,
        )
        assert status == 200, body
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["aud"] == ["https://api.example.com", "https://other.example.com"]
        # No scope and no resource: the client's defaults.
        status, _, body = await post_raw(service, "grant_type=client_credentials", auth)
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["aud"] == ["https://api.example.com", "https://other.example.com"]
        assert claims["scope"] == "read write"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/json"}, '{"grant_type": "client_credentials"}', 400),
        ({"Content-Type": "text/plain"}, "grant_type=client_credentials", 400),
        ({**FORM, "Authorization": "Bearer abc"}, "grant_type=client_credentials", 401),
        ({**FORM, "Authorization": "Basic !!!"}, "grant_type=client_credentials", 400),
        ({**FORM, "Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
         "grant_type=client_credentials", 400),
        ({**FORM, "Authorization": "Basic " + base64.b64encode(b"\xff:x").decode()},
         "grant_type=client_credentials", 400),
        ({**FORM, "Content-Type": "application/x-www-form-urlencoded; charset=latin-1"},
         "grant_type=client_credentials", 400),
    ],
)  # fmt: skip
async def test_malformed_requests(
    home: Home, headers: dict[str, str], body: str, status: int
) -> None:
    async with running(home) as service:
        got, _, doc = await service.post(data=body, headers=headers)
    assert got == status
    assert doc["error"] == ("invalid_client" if status == 401 else "invalid_request")


async def test_unknown_client(home: Home) -> None:
    async with running(home) as service:
        status, _, body = await post_raw(
            service, "grant_type=client_credentials", {"Authorization": basic("ghost", "x")}
        )
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await service.token(client_id="ghost")
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await service.token()
        assert (status, body["error"]) == (401, "invalid_client")


async def test_unauthorized_client(home: Home) -> None:
    """A client registered without the client_credentials grant: unauthorized_client."""
    from mtlsauth.issuer.registration import register
    from mtlsauth.issuer.store import open_store

    new = register(
        auth_method="client_secret_basic",
        secret_key=home.settings.secret_key.get(),
        client_id="nogrant",
        grant_types=(),
    )
    store = open_store(home.settings.database_url.get())
    await store.open()
    await store.add_client(new.client)
    await store.close()
    assert new.client_secret is not None
    async with running(home) as service:
        status, _, body = await post_raw(
            service,
            "grant_type=client_credentials",
            {"Authorization": basic("nogrant", new.client_secret)},
        )
    assert (status, body["error"]) == (400, "unauthorized_client")


async def test_method_and_size_limits(home: Home) -> None:
    async with running(home) as service:
        status, body = await service.get("/token")
        assert (status, body["error"]) == (405, "invalid_request")
        big = "grant_type=client_credentials&pad=" + "a" * (home.settings.max_body_bytes + 10)
        status, _, body = await post_raw(service, big)
        assert (status, body["error"]) == (413, "invalid_request")
        status, body = await service.get("/nope")
        assert status == 404


async def test_a_repeated_parameter_is_named_back_only_when_plain(
    home: Home, secret_clients: dict[str, str]
) -> None:
    auth = {"Authorization": basic("b", secret_clients["b"])}
    async with running(home) as service:
        _, _, plain = await post_raw(service, "grant_type=client_credentials&scope=a&scope=b", auth)
        _, _, odd = await post_raw(
            service, "grant_type=client_credentials&%3Cevil%3E=1&%3Cevil%3E=2", auth
        )
    assert (plain["error"], odd["error"]) == ("invalid_request", "invalid_request")
    assert "'scope'" in plain["error_description"]
    assert "evil" not in odd["error_description"]

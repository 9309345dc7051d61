"""Every attributes shape ID.me sends: JSON variants, JWT, JWE, and what is refused and how."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
import respx

from idme_passback import (
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    DocumentTokens,
    MalformedResponseError,
    PassbackClient,
    PermissionDeniedError,
    TokenVerificationError,
)
from idme_passback._attributes import AttributesDecoder
from idme_passback._jose import JWKSSource
from idme_passback.testing import FakeClock, FakeIdMe, FakePassbackServer

pytestmark = pytest.mark.anyio

BASE = "http://fake/"
ATTRIBUTES = BASE + "api/public/v3/attributes.json"
ACCESS_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"
FRONT = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"


def client_for(fake: FakePassbackServer, **options: Any) -> PassbackClient:
    return PassbackClient(
        fake.api_token, base_url=BASE, transport=httpx.ASGITransport(app=fake), **options
    )


def answering(body: bytes | str, content_type: str = "application/json") -> PassbackClient:
    """A client whose attributes call gets ``body``; a second call would fail the test."""
    content = body.encode() if isinstance(body, str) else body
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        assert len(calls) == 1, "the single-use access token was sent twice"
        return httpx.Response(200, content=content, headers={"content-type": content_type})

    return PassbackClient(API_TOKEN, transport=httpx.MockTransport(answer))


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "attributes": [
            {"handle": "fname", "name": "First Name", "value": "Jane"},
            {"handle": "document_tokens", "value": {"front": FRONT, "back": FRONT[::-1]}},
        ],
        "status": [{"group": "identity", "subgroups": ["IAL2"], "verified": True}],
    }
    base.update(changes)
    return base


# -- lenient where reality is ---------------------------------------------------------------


@pytest.mark.parametrize("back", ["null", "missing", "empty"])
async def test_a_front_only_document_is_a_pair_without_a_back(back: Any) -> None:
    fake = FakePassbackServer(idme=FakeIdMe(document_back=back))
    async with client_for(fake) as client:
        tokens = (await client.get_attributes(fake.access_token)).document_tokens
        assert tokens.back is None
        assert list(tokens) == [tokens.front]
        image = await client.get_document(tokens.front)
    assert image.content == fake.served_bytes(tokens.front)
    assert "back=None" in repr(tokens)
    assert fake.count(endpoint="document") == 1


async def test_a_front_only_document_survives_front_back_pairing() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(document_back="null"))
    async with client_for(fake, pair_front_back=True) as client:
        attributes = await client.get_attributes(fake.access_token)
    assert attributes.document_tokens == DocumentTokens(attributes.document_tokens.front)


async def test_attributes_without_a_name_are_kept() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(attribute_names=False))
    async with client_for(fake) as client:
        attributes = await client.get_attributes(fake.access_token)
    assert attributes["fname"].value == "Jane"
    assert attributes["fname"].name == ""
    assert attributes.has_document_tokens


@pytest.mark.parametrize(
    ("status", "subgroups"),
    [
        ([], None),
        (None, None),
        ([{"group": "identity", "subgroups": [], "verified": True}], ()),
        ([{"group": "identity", "subgroups": None, "verified": False}], None),
        ([{"group": "military", "subgroup": "Veteran", "verified": True}], ("Veteran",)),
    ],
)
async def test_status_variants_are_accepted_and_kept(
    status: Any, subgroups: tuple[str, ...] | None
) -> None:
    fake = FakePassbackServer(idme=FakeIdMe(status=status))
    async with client_for(fake) as client:
        attributes = await client.get_attributes(fake.access_token)
    if not status:
        assert attributes.status == ()
    else:
        assert attributes.status[0].group == status[0]["group"]
        assert attributes.status[0].subgroups == subgroups
    assert attributes.raw["status"] == status


# -- strict where it matters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        ("invalid_token", AuthenticationError, 401),
        ("insufficient_scope", PermissionDeniedError, 403),
        ("server_error", APIStatusError, 200),
    ],
)
async def test_a_200_carrying_an_error_is_that_error(
    error: str, expected: type[APIStatusError], status: int
) -> None:
    body = {"error": error, "error_description": "The access token is invalid"}
    async with answering(json.dumps(body)) as client:
        with pytest.raises(expected) as caught:
            await client.get_attributes(ACCESS_TOKEN)
    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.error == error
    assert caught.value.error_description == "The access token is invalid"


async def test_a_200_error_echoing_the_access_token_is_scrubbed() -> None:
    body = {"error": "invalid_token", "error_description": f"token {ACCESS_TOKEN} is bad"}
    async with answering(json.dumps(body)) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_attributes(ACCESS_TOKEN)
    assert ACCESS_TOKEN not in str(caught.value) + str(caught.value.error_description)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{}", "no 'attributes' list"),
        ('{"attributes": {}}', "a dict for its 'attributes' list"),
        ('{"status": []}', "no 'attributes' list"),
        ('{"attributes": [], "status": {}}', "'status' is not a list"),
    ],
)
async def test_a_200_without_an_attributes_list_is_malformed(body: str, words: str) -> None:
    async with answering(body) as client:
        with pytest.raises(MalformedResponseError, match=words):
            await client.get_attributes(ACCESS_TOKEN)


@pytest.mark.parametrize(
    "value",
    [{"back": FRONT}, {"front": "", "back": FRONT}, {"front": FRONT, "back": 7}, "front"],
)
async def test_broken_document_tokens_are_malformed_but_keep_the_payload(value: Any) -> None:
    body = payload(attributes=[{"handle": "document_tokens", "value": value}])
    async with answering(json.dumps(body)) as client:
        attributes = await client.get_attributes(ACCESS_TOKEN)
    with pytest.raises(MalformedResponseError):
        _ = attributes.document_tokens
    assert attributes.raw == body


# -- JWT and JWE through get_attributes (once it decodes them) ------------------------------


@pytest.mark.parametrize("form", ["jwt", "jwt_quoted"])
async def test_get_attributes_reads_a_signed_answer(form: Any) -> None:
    fake = FakePassbackServer(idme=FakeIdMe(attributes_format=form))
    async with client_for(fake) as client:
        attributes = await client.get_attributes(fake.access_token)
    assert attributes["fname"].value == "Jane"
    assert attributes.document_tokens.back is not None


@pytest.mark.parametrize("form", ["jwe", "jwe_quoted"])
async def test_get_attributes_reads_an_encrypted_answer(form: Any) -> None:
    fake = FakePassbackServer(idme=FakeIdMe(attributes_format=form))
    key = fake.idme.decryption_key
    async with client_for(fake, attributes_decryption_key=key) as client:
        attributes = await client.get_attributes(fake.access_token)
    assert attributes.has_document_tokens


async def test_get_attributes_names_the_option_an_encrypted_answer_needs() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(attributes_format="jwe"))
    async with client_for(fake) as client:
        with pytest.raises(ConfigurationError, match="attributes_decryption_key"):
            await client.get_attributes(fake.access_token)


async def test_get_attributes_refuses_a_tampered_jwt() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(attributes_format="jwt"))
    forged = fake.idme.keys.sign(payload())[:-4] + "AAAA"
    respx_transport = httpx.MockTransport(
        lambda r: (
            httpx.Response(200, text=forged)
            if r.url.path.endswith("attributes.json")
            else httpx.Response(200, json=fake.idme.keys.jwks())
        )
    )
    async with PassbackClient(API_TOKEN, base_url=BASE, transport=respx_transport) as client:
        with pytest.raises(TokenVerificationError):
            await client.get_attributes(ACCESS_TOKEN)


# -- the decoder itself, against the fake's JWKS (until get_attributes is wired) -----------


class Decoding:
    """A fake ID.me and a decoder reading its JWKS over ASGI, on fake time."""

    def __init__(self, **options: Any) -> None:
        self.clock = FakeClock()
        self.fake = FakePassbackServer(clock=self.clock)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.fake))
        self.jwks = JWKSSource(BASE, self.http, clock=self.clock)
        self.decoder = AttributesDecoder(self.jwks, wall_clock=self.fake.idme.wall_time, **options)

    async def answer(self, form: Any) -> httpx.Response:
        self.fake.idme.attributes_format = form
        url = ATTRIBUTES + "?access_token=" + self.fake.access_token
        return await self.http.get(url)

    async def decode(self, body: bytes | str, content_type: str | None = None) -> dict[str, Any]:
        raw = body.encode() if isinstance(body, str) else body
        return await self.decoder.decode(raw, content_type)


@pytest.mark.parametrize("form", ["json", "jwt", "jwt_quoted", "jwe", "jwe_quoted"])
async def test_the_decoder_reads_every_form_the_fake_sends(form: Any) -> None:
    setup = Decoding()
    setup.decoder = AttributesDecoder(
        setup.jwks,
        decryption_key=setup.fake.idme.decryption_key,
        wall_clock=setup.fake.idme.wall_time,
    )
    answer = await setup.answer(form)
    decoded = await setup.decode(answer.content, answer.headers["content-type"])
    assert [a["handle"] for a in decoded["attributes"]][:2] == ["fname", "lname"]
    assert decoded["status"][0]["group"] == "identity"
    expected_jwks = 0 if form == "json" else 1
    assert setup.fake.count(endpoint="jwks") == expected_jwks


async def test_a_raw_jwt_is_read_whatever_its_content_type() -> None:
    setup = Decoding()
    token = setup.fake.idme.keys.sign(payload())
    for content_type in ("text/plain", None, "application/jwt; charset=utf-8"):
        assert (await setup.decode(token + "\n", content_type))["attributes"][0]["value"] == "Jane"


async def test_a_jwe_holding_plain_json_is_read() -> None:
    setup = Decoding(decryption_key=None)
    keys = setup.fake.idme.keys
    setup.decoder = AttributesDecoder(
        setup.jwks, decryption_key=keys.consumer_key.as_pem(private=True)
    )
    decoded = await setup.decode(json.dumps(keys.encrypt_json(payload())))
    assert decoded == payload()


async def test_a_jwe_without_a_key_names_the_option() -> None:
    setup = Decoding()
    answer = await setup.answer("jwe_quoted")
    with pytest.raises(ConfigurationError, match="attributes_decryption_key="):
        await setup.decode(answer.content)


async def test_a_jwe_for_another_key_does_not_decrypt() -> None:
    setup = Decoding()
    other = FakePassbackServer().idme.decryption_key
    setup.decoder = AttributesDecoder(setup.jwks, decryption_key=other)
    answer = await setup.answer("jwe")
    with pytest.raises(TokenVerificationError, match="does not decrypt"):
        await setup.decode(answer.content)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("forge", "match"),
    [
        (lambda t: t.rsplit(".", 1)[0] + "." + t.rsplit(".", 1)[1][::-1], "signature"),
        (
            lambda t: t.split(".")[0] + "." + b64(payload(extra=1)) + "." + t.split(".")[2],
            "signature",
        ),
        (lambda t: b64({"alg": "none"}) + "." + t.split(".")[1] + ".", "'none'"),
        (
            lambda t: b64({"alg": "HS256", "kid": "fake-idme-1"}) + "." + t.split(".", 1)[1],
            "'HS256'",
        ),
        (lambda t: "e30." + t.split(".", 1)[1], "'NoneType'|not one of"),
    ],
)
async def test_a_tampered_jwt_is_refused(forge: Any, match: str) -> None:
    setup = Decoding()
    token = setup.fake.idme.keys.sign(payload())
    with pytest.raises(TokenVerificationError, match=match):
        await setup.decode(forge(token), "application/jwt")


async def test_an_expired_jwt_is_refused_and_verify_false_reads_it_anyway() -> None:
    setup = Decoding()
    now = int(setup.fake.idme.wall_time())
    token = setup.fake.idme.keys.sign(payload(exp=now - 3600))
    with pytest.raises(TokenVerificationError, match="expired"):
        await setup.decode(token)
    unverified = AttributesDecoder(None, verify=False)
    assert (await unverified.decode(token.encode(), None))["exp"] == now - 3600


async def test_key_rotation_is_followed_and_a_bogus_kid_is_not_a_request_stream() -> None:
    setup = Decoding()
    keys = setup.fake.idme.keys
    await setup.decode(keys.sign(payload()))
    keys.rotate(keep_old=False)
    with pytest.raises(TokenVerificationError, match="fake-idme-2"):
        await setup.decode(keys.sign(payload()))  # within the refetch interval
    assert setup.fake.count(endpoint="jwks") == 1
    await setup.clock.advance(60.0)
    assert await setup.decode(keys.sign(payload())) == {**payload(), **{}}
    assert setup.fake.count(endpoint="jwks") == 2
    for _ in range(5):
        with pytest.raises(TokenVerificationError, match="not in the JWKS"):
            await setup.decode(keys.sign(payload(), kid="bogus"))
    assert setup.fake.count(endpoint="jwks") == 2


async def test_prepare_warms_the_jwks_and_never_raises() -> None:
    setup = Decoding()
    await setup.decoder.prepare()
    assert setup.fake.count(endpoint="jwks") == 1
    broken = AttributesDecoder(JWKSSource("http://fake/nowhere/", setup.http, clock=setup.clock))
    await broken.prepare()
    with pytest.raises(APIStatusError):
        await broken.decode(setup.fake.idme.keys.sign(payload()).encode(), None)


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"", None, "is empty"),
        (b"<html><body>Sorry</body></html>", "text/html", "HTML"),
        (b"[1, 2]", None, "JSON array"),
        (b'{"attributes": [', None, "looks like a JSON object but is not valid JSON"),
        (b'"hello"', None, "JSON string, but not a JWT"),
        (b"eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ", "application/jwt", "looks like a JWT but has 2"),
        (b"eyJhbGciOiJSUzI1NiJ9.e30.sig.extra", None, "looks like a JWT but has 4"),
        (b"\xff\xd8\xff\xe0", None, "not UTF-8"),
        (b"access denied", "text/plain", "not JSON, a JWT or a JWE"),
    ],
)
async def test_other_bodies_say_what_they_looked_like(
    body: bytes, content_type: str | None, words: str
) -> None:
    setup = Decoding()
    with pytest.raises(MalformedResponseError, match=words):
        await setup.decode(body, content_type)


@pytest.mark.parametrize("key", ["not a key", {"kty": "RSA"}, b"-----BEGIN nothing-----", 42])
def test_a_decryption_key_that_is_no_rsa_private_key_fails_at_construction(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="attributes_decryption_key must be"):
        AttributesDecoder(None, decryption_key=key)
    public = FakePassbackServer().idme.keys.consumer_key.as_dict(private=False)
    with pytest.raises(ConfigurationError, match="private key"):
        AttributesDecoder(None, decryption_key=public)


async def test_no_part_of_the_body_reaches_a_message_or_a_repr() -> None:
    setup = Decoding()
    secret_body = b"<html>Jane Doe 1990-01-31 " + ACCESS_TOKEN.encode() + b"</html>"
    with pytest.raises(MalformedResponseError) as caught:
        await setup.decode(secret_body)
    assert "Jane" not in str(caught.value)
    assert ACCESS_TOKEN not in str(caught.value)
    assert "<hidden>" in repr(
        AttributesDecoder(None, decryption_key=setup.fake.idme.decryption_key)
    )


@respx.mock
async def test_the_jwks_fetch_is_typed_and_read_to_a_cap() -> None:
    route = respx.get("https://api.idmelabs.com/oidc/.well-known/jwks")
    async with httpx.AsyncClient() as http:
        for answer, expected in [
            (httpx.Response(200, content=b" " * (300 * 1024)), MalformedResponseError),
            (httpx.Response(200, json={"keys": "none"}), MalformedResponseError),
            (httpx.Response(404, text="<html>404</html>"), APIStatusError),
        ]:
            route.return_value = answer
            source = JWKSSource("https://api.idmelabs.com/", http)
            with pytest.raises(expected):
                await source.load()
        route.side_effect = httpx.ConnectError("refused")
        with pytest.raises(Exception, match="JWKS request failed") as caught:
            await JWKSSource("https://api.idmelabs.com/", http).load()
    assert caught.value.__context__ is None

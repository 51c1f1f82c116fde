"""Buy-now links: signed, expiring, for one quote; anything else is refused with 403."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from dealflow_common.http.problems import Problem
from dealflow_quote.adapters.buy_now import BuyNowLinks

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
QUOTE = uuid.UUID("00000000-0000-4000-8000-000000000001")
OPPORTUNITY = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
SECRET = "buy-now-secret-of-at-least-32-bytes!"
BASE_URL = "https://shop.example.com"
TTL = timedelta(days=7)


def _links(secret: str = SECRET, base_url: str = BASE_URL) -> BuyNowLinks:
    return BuyNowLinks(SecretStr(secret), base_url, TTL)


def _refused(links: BuyNowLinks, token: str, now: datetime = NOW) -> Problem:
    with pytest.raises(Problem) as refused:
        links.verify(token, now)
    assert refused.value.status == 403
    return refused.value


def test_a_link_verifies_to_its_quote_and_opportunity() -> None:
    links = _links()
    link = links.issue(QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW)
    assert links.verify(link.token, NOW + timedelta(days=6)) == (QUOTE, OPPORTUNITY)


def test_a_link_lasts_its_ttl_when_the_quote_is_valid_longer() -> None:
    link = _links().issue(QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW)
    assert link.expires_at == NOW + TTL


def test_a_link_never_outlives_the_quote() -> None:
    links = _links()
    valid_until = NOW + timedelta(days=2)
    link = links.issue(QUOTE, OPPORTUNITY, valid_until, NOW)

    assert link.expires_at == valid_until
    assert links.verify(link.token, valid_until - timedelta(seconds=1)) == (QUOTE, OPPORTUNITY)
    _refused(links, link.token, valid_until + timedelta(seconds=1))


def test_an_expired_link_is_refused() -> None:
    links = _links()
    link = links.issue(QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW)
    _refused(links, link.token, NOW + TTL)
    _refused(links, link.token, NOW + TTL + timedelta(days=1))


def test_a_tampered_link_is_refused() -> None:
    links = _links()
    token = links.issue(QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW).token
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    swapped = "A" if payload[middle] != "A" else "B"
    tampered = ".".join([header, payload[:middle] + swapped + payload[middle + 1 :], signature])
    assert tampered != token

    _refused(links, tampered)


def test_a_link_signed_with_another_secret_is_refused() -> None:
    forged = _links(secret="another-secret-also-32-bytes-long!!").issue(
        QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW
    )
    _refused(_links(), forged.token)


def test_a_link_verifies_at_any_moment_of_its_life_whatever_the_wall_clock() -> None:
    links = _links()
    issued = datetime.now(UTC) + timedelta(hours=1)  # an injected clock ahead of the wall
    link = links.issue(QUOTE, OPPORTUNITY, issued + timedelta(days=30), issued)
    assert links.verify(link.token, issued + timedelta(minutes=1)) == (QUOTE, OPPORTUNITY)


def test_garbage_is_refused() -> None:
    _refused(_links(), "not-a-token")


@pytest.mark.parametrize("base_url", [BASE_URL, BASE_URL + "/"], ids=["bare", "trailing-slash"])
def test_the_url_is_the_base_url_then_buy_now_then_the_token(base_url: str) -> None:
    link = _links(base_url=base_url).issue(QUOTE, OPPORTUNITY, NOW + timedelta(days=30), NOW)
    assert link.url.startswith(BASE_URL + "/buy-now/")
    assert link.url == f"{BASE_URL}/buy-now/{link.token}"

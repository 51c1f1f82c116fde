"""The load: deals through the services' REST APIs, by a few concurrent clients.

One deal is bench/deals.py's: create the opportunity, qualify, quote A, proposal,
present A, quote B, present B, abandon B, negotiation, accept A, and wait until the
opportunity is won (seen on Kafka). One deal in `RACE_EVERY` instead sends its accept
and a "lose" at the same moment, so the lost path and the saga's refusal run too.

Calls may fail while a fault lasts. The client retries only what is safe to retry and
records what it got, so the checker can hold the system to it:
- a call that never reached a service (connection refused, no replica serving), a
  refusal that wrote nothing (the quote service's 404/422 for an opportunity it does not
  know yet) and a 503 (the database could not answer: nothing was changed, the API
  says) are retried until the step's deadline;
- a state transition whose answer was lost (timeout, reset, 5xx) is retried too; a
  409 after such an attempt is checked against the resource (it may be our own
  earlier attempt that moved it);
- a create whose answer was lost (timeout, reset, 5xx such as 500 outcome-unknown) is
  retried with the same Idempotency-Key: the service answers with what the first
  attempt made, or makes it now if that stored nothing, never a second one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from chaos.records import KafkaLog
from chaos.stack import Stack

RACE_EVERY = 4
LINE = {
    "description": "Seat",
    "quantity": "1",
    "unit_price": {"amount": "1000.00", "currency": "USD"},
}
OPPORTUNITY = {
    "title": "Chaos deal",
    "customer": {"kind": "organization", "id": "chaos", "name": "Chaos Corp"},
    "value": {"amount": "1000.00", "currency": "USD"},
}


class NoReplica(Exception):
    """No replica of the service is serving (it is being restarted)."""


UNREACHED = (aiohttp.ClientConnectorError, NoReplica)
"""The request did not reach the service (nothing can have been written)."""


class Refused(Exception):
    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"{status}: {str(payload)[:200]}")
        self.status = status


class GaveUp(Exception):
    """The step's deadline passed while the service was unreachable or refusing."""


@dataclass
class Deal:
    number: int
    racing_lose: bool
    opportunity_id: str | None = None
    quote_a: str | None = None
    quote_b: str | None = None
    accepted: bool = False
    """The accept was answered 202 (or, its answer lost, the quote was found accepting)."""
    lose_status: int | None = None
    """Race deals: 200 (the lose was taken) or 409 (refused, the deal was won first)."""
    outcome: str | None = None
    """'won' or 'lost' as read on Kafka; None if not seen within the wait."""
    failure: str | None = None
    done: bool = False
    calls: int = 0
    retries: int = 0


@dataclass
class Api:
    session: aiohttp.ClientSession
    stack: Stack
    step_deadline: float
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    async def _once(
        self,
        deal: Deal,
        service: str,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        urls = self.stack.urls(service)
        if not urls:
            raise NoReplica(service)
        url = urls[next(self._turn) % len(urls)]
        deal.calls += 1
        async with self.session.request(
            method, f"{url}{path}", json=body, headers=headers
        ) as response:
            raw = await response.read()
            try:
                payload = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                payload = raw[:200]
            return response.status, payload

    async def create(
        self, deal: Deal, service: str, path: str, body: Any, *, not_yet: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """POST a new resource, retried under one Idempotency-Key until answered: a
        retry of an attempt that was stored gets that attempt's resource."""
        key = {"Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + self.step_deadline
        last = "no attempt"
        while time.monotonic() < deadline:
            try:
                status, payload = await self._once(deal, service, "POST", path, body, key)
            except UNREACHED as error:
                last = repr(error)
            except (aiohttp.ClientError, TimeoutError) as error:
                last = repr(error)  # the answer was lost, maybe not the create: retry
            else:
                if status == 201:
                    return dict(payload)
                if status >= 500:
                    # 503: nothing was written; 500 (outcome-unknown): maybe it was.
                    last = f"{status} {str(payload)[:120]}"
                elif status not in not_yet:
                    raise Refused(status, payload)
                else:
                    last = f"{status} {str(payload)[:120]}"
            deal.retries += 1
            await asyncio.sleep(0.5)
        raise GaveUp(f"POST {path}: {last}")

    async def transition(
        self,
        deal: Deal,
        service: str,
        path: str,
        body: Any,
        already: Callable[[], Awaitable[bool]],
    ) -> int:
        """POST a state transition; retried, then checked if an earlier try may have won."""
        deadline = time.monotonic() + self.step_deadline
        maybe_applied = False
        last = "no attempt"
        while time.monotonic() < deadline:
            try:
                status, payload = await self._once(deal, service, "POST", path, body)
            except UNREACHED as error:
                last = repr(error)
            except (aiohttp.ClientError, TimeoutError) as error:
                maybe_applied, last = True, repr(error)
            else:
                if status < 300:
                    return status
                if status == 503:
                    last = f"{status} {str(payload)[:120]}"  # nothing was written
                elif status >= 500:
                    maybe_applied, last = True, f"{status} {str(payload)[:120]}"
                elif status in (409, 412) and maybe_applied and await already():
                    return 200  # our own earlier attempt was applied
                else:
                    raise Refused(status, payload)
            deal.retries += 1
            await asyncio.sleep(0.5)
        raise GaveUp(f"POST {path}: {last}")

    async def read(self, deal: Deal, service: str, path: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.step_deadline
        while time.monotonic() < deadline:
            try:
                status, payload = await self._once(deal, service, "GET", path, None)
                if status == 200:
                    return dict(payload)
            except (NoReplica, aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)
        return None


@dataclass
class Load:
    """Starts deals with `concurrency` clients while the fault lasts (at most `max_deals`),
    then a last few that run entirely after it: they show the system works again (a
    consumer that died at the very end of a fault has nothing else to trip on)."""

    api: Api
    log: KafkaLog
    concurrency: int
    min_deals: int
    max_deals: int
    outcome_wait: float
    first_number: int = 0
    deals: list[Deal] = field(default_factory=list)
    _last: int | None = None

    def stop_after(self, more: int) -> None:
        """Start `more` deals from now on (and at least `min_deals` in all), then stop."""
        self._last = max(len(self.deals) + more, self.min_deals)

    def _may_start(self) -> bool:
        if self._last is not None:
            return len(self.deals) < self._last
        return len(self.deals) < self.max_deals

    def live(self) -> list[Deal]:
        """Deals under way whose opportunity exists."""
        return [d for d in self.deals if not d.done and d.opportunity_id]

    async def run(self) -> None:
        numbers = itertools.count(self.first_number)

        async def client() -> None:
            while self._may_start():
                number = next(numbers)
                deal = Deal(number, racing_lose=number % RACE_EVERY == RACE_EVERY - 1)
                self.deals.append(deal)
                await self.run_deal(deal)

        await asyncio.gather(*(client() for _ in range(self.concurrency)))

    async def run_deal(self, deal: Deal) -> None:
        try:
            await self._steps(deal)
        except (Refused, GaveUp) as error:
            deal.failure = f"{type(error).__name__}: {error}"
        except Exception as error:  # a bug of the harness must not stop the other deals
            deal.failure = f"harness error: {error!r}"
        finally:
            deal.done = True

    async def _steps(self, deal: Deal) -> None:
        api, opp_path = self.api, "/opportunities"
        deal.opportunity_id = (await api.create(deal, "opportunity", opp_path, OPPORTUNITY))["id"]
        opportunity = f"{opp_path}/{deal.opportunity_id}"

        async def move(stage: str) -> None:
            async def there() -> bool:
                found = await api.read(deal, "opportunity", opportunity)
                return bool(found and found["stage"] == stage)

            body = {"stage": stage}
            await api.transition(deal, "opportunity", f"{opportunity}/stage", body, there)

        async def quote_action(quote: str, action: str, body: Any, states: set[str]) -> None:
            async def there() -> bool:
                found = await api.read(deal, "quote", f"/quotes/{quote}")
                return bool(found and found["status"] in states)

            await api.transition(deal, "quote", f"/quotes/{quote}/{action}", body, there)

        async def new_quote() -> str:
            body = {"opportunity_id": deal.opportunity_id, "lines": [LINE]}
            # The quote service may not have learnt of the opportunity yet: it refuses
            # (404 or 422 naming opportunity_id) and writes nothing, so trying again is safe.
            not_yet = (404, 409, 422)
            return str((await api.create(deal, "quote", "/quotes", body, not_yet=not_yet))["id"])

        await move("qualification")
        deal.quote_a = await new_quote()
        await move("proposal")
        await quote_action(deal.quote_a, "present", None, {"presented"})
        deal.quote_b = await new_quote()
        await quote_action(deal.quote_b, "present", None, {"presented"})
        await quote_action(deal.quote_b, "abandon", {"reason": "customer chose A"}, {"abandoned"})
        await move("negotiation")

        accepting = {"accept_pending", "accepted"}
        if deal.racing_lose:
            accept, lose = await asyncio.gather(
                quote_action(deal.quote_a, "accept", None, accepting),
                self._lose(deal, opportunity),
                return_exceptions=True,
            )
            deal.accepted = not isinstance(accept, BaseException)
            if isinstance(lose, BaseException) and not isinstance(lose, Refused):
                raise lose
        else:
            await quote_action(deal.quote_a, "accept", None, accepting)
            deal.accepted = True
        deal.outcome = await self.log.outcome(deal.opportunity_id, self.outcome_wait)

    async def _lose(self, deal: Deal, opportunity: str) -> None:
        async def lost() -> bool:
            found = await self.api.read(deal, "opportunity", opportunity)
            return bool(found and found["stage"] == "closed_lost")

        try:
            deal.lose_status = await self.api.transition(
                deal, "opportunity", f"{opportunity}/lose", {"reason": "budget cut"}, lost
            )
        except Refused as refused:
            deal.lose_status = refused.status
            raise

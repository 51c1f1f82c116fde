"""Quote, catalog, buy-now and saga endpoints: thin adapters from HTTP to the use cases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.quote import QuoteStatus
from dealflow_common.contracts.trusted import trusted
from dealflow_common.http.idempotency import answered_again, idempotency_key_header
from dealflow_common.http.paging import (
    IfMatch,
    decode_time_and_id,
    encode_time_and_id,
    etag,
    expected_version,
)
from dealflow_common.http.problems import (
    CHANGES,
    READS,
    problem_responses,
)
from dealflow_common.http.security import Caller, requires
from dealflow_common.idempotency import Idempotency
from dealflow_quote.adapters.buy_now import BuyNowLinks
from dealflow_quote.api.schemas import (
    BundleChanges,
    BundleItemBody,
    BundleRequest,
    BundleResponse,
    BuyNowLinkResponse,
    BuyNowQuoteResponse,
    CreateQuoteRequest,
    LineRequest,
    LineResponse,
    ProductChanges,
    ProductRequest,
    ProductResponse,
    QuoteResponse,
    ReasonRequest,
    ReviseQuoteRequest,
    StuckAcceptancePage,
    StuckAcceptanceResponse,
)
from dealflow_quote.application import catalog, use_cases
from dealflow_quote.application.arrivals import OpportunityArrivals
from dealflow_quote.application.queries import QuoteReader
from dealflow_quote.application.use_cases import LineRequest as LineCommand
from dealflow_quote.application.use_cases import QuotePolicy, UnitOfWorkFactory
from dealflow_quote.domain import access
from dealflow_quote.domain.catalog import Bundle, BundleItem, Product
from dealflow_quote.domain.errors import QuoteActionNotAllowed
from dealflow_quote.domain.lifecycle import QuoteAction
from dealflow_quote.domain.model import AcceptanceDeadline, Quote

_READ, _WRITE = READS, CHANGES
_IdempotencyKey = Annotated[
    str | None,
    idempotency_key_header(
        "Makes a retried create make one quote: the same key with the same body is answered "
        "with the quote the first request made (`Idempotent-Replayed: true`); with another "
        "body, 422. Send one when a create may be retried (a timeout, a 500 outcome-unknown)."
    ),
]
Operator = Annotated[Principal, Depends(requires(Role.OPERATOR, Role.ADMIN))]


_LINE_FIELDS = tuple(LineResponse.model_fields)


def _lines(quote: Quote) -> list[LineResponse]:
    # A line's values were validated when the line was made (its Money, its total
    # computed from them): taken as they are, not validated again for every answer.
    return [
        trusted(LineResponse, {name: getattr(line, name) for name in _LINE_FIELDS})
        for line in quote.lines
    ]


def to_response(quote: Quote, policy: QuotePolicy) -> QuoteResponse:
    # The aggregate's values, valid as the domain keeps them, in the response's order.
    threshold = policy.approval_threshold_percent
    return trusted(
        QuoteResponse,
        {
            "id": quote.id,
            "opportunity_id": quote.opportunity_id,
            "status": quote.status,
            "currency": quote.currency,
            "lines": _lines(quote),
            "total": quote.total,
            "discount_percent": quote.discount_percent,
            "needs_approval": quote.needs_approval(threshold),
            "valid_until": quote.valid_until,
            "status_reason": quote.status_reason,
            "approved_by": quote.approved_by,
            "accepted_at": quote.accepted_at,
            "allowed_actions": quote.allowed_actions(threshold),
            "created_by": quote.created_by,
            "created_at": quote.created_at,
            "updated_at": quote.updated_at,
            "version": quote.version,
        },
    )


def _commands(lines: list[LineRequest]) -> list[LineCommand]:
    return [
        LineCommand(
            quantity=line.quantity,
            product_id=line.product_id,
            bundle_id=line.bundle_id,
            description=line.description,
            unit_price=line.unit_price,
            discount_percent=line.discount_percent,
        )
        for line in lines
    ]


def quote_routes(
    unit_of_work: UnitOfWorkFactory,
    reader: QuoteReader,
    policy: QuotePolicy,
    arrivals: OpportunityArrivals,
    links: BuyNowLinks,
    clock: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter(prefix="/quotes", tags=["quotes"])

    def answer(response: Response, quote: Quote) -> QuoteResponse:
        response.headers["ETag"] = etag(quote.version)
        return to_response(quote, policy)

    @router.post("", status_code=201, responses=_WRITE, summary="Create a draft quote")
    async def create_quote(
        body: CreateQuoteRequest,
        caller: Caller,
        response: Response,
        idempotency_key: _IdempotencyKey = None,
    ) -> QuoteResponse:
        drafted = await use_cases.create_quote(
            unit_of_work,
            caller,
            policy,
            arrivals,
            reader,
            opportunity_id=body.opportunity_id,
            lines=_commands(body.lines),
            currency=body.currency,
            valid_until=body.valid_until,
            idempotency=Idempotency.of(idempotency_key, "quote", body),
        )
        response.headers["Location"] = f"/quotes/{drafted.quote.id}"
        answered_again(response, drafted.replayed)
        return answer(response, drafted.quote)

    @router.get("", responses=_READ, summary="The quotes of an opportunity, oldest first")
    async def list_quotes(
        opportunity_id: UUID, caller: Caller, status: QuoteStatus | None = None
    ) -> list[QuoteResponse]:
        return [
            to_response(q, policy)
            for q in await reader.of_opportunity(opportunity_id, status, caller)
        ]

    @router.get("/{quote_id}", responses=_READ, summary="One quote")
    async def get_quote(quote_id: UUID, caller: Caller, response: Response) -> QuoteResponse:
        return answer(response, await reader.get(quote_id, caller))

    @router.patch("/{quote_id}", responses=_WRITE, summary="Edit a draft")
    async def revise_quote(
        quote_id: UUID,
        body: ReviseQuoteRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> QuoteResponse:
        quote = await use_cases.revise_quote(
            unit_of_work,
            quote_id,
            caller,
            expected_version(if_match),
            _commands(body.lines) if body.lines else None,
            body.valid_until,
        )
        return answer(response, quote)

    def action(
        path: str,
        summary: str,
        apply: Callable[[Quote, Principal, datetime], object],
        authorize: Callable[[Principal], None] = access.require_quote_work,
    ) -> None:
        @router.post(
            f"/{{quote_id}}/{path}", responses=_WRITE, summary=summary, name=path.replace("-", "_")
        )
        async def run(
            quote_id: UUID, caller: Caller, response: Response, if_match: IfMatch = None
        ) -> QuoteResponse:
            quote = await use_cases.change_quote(
                unit_of_work,
                quote_id,
                caller,
                expected_version(if_match),
                lambda q, now: apply(q, caller, now),
                authorize,
            )
            return answer(response, quote)

    action(
        "present",
        "Present to the customer (draft within the threshold, or approved)",
        lambda q, p, now: q.present(policy.approval_threshold_percent, p.user_id, now),
    )
    action(
        "submit-for-approval",
        "Ask a manager to approve a discount above the threshold",
        lambda q, p, now: q.submit_for_approval(policy.approval_threshold_percent, p.user_id, now),
    )
    action(
        "approve",
        "Approve the discount (manager, admin)",
        lambda q, p, now: q.approve(p.user_id, now),
        access.require_approver,
    )
    action(
        "rework",
        "Back to draft to change the offer (after an approval refused or given)",
        lambda q, p, now: q.rework(p.user_id, now),
    )

    def action_with_reason(
        path: str,
        summary: str,
        apply: Callable[[Quote, Principal, str, datetime], object],
        authorize: Callable[[Principal], None] = access.require_quote_work,
    ) -> None:
        @router.post(
            f"/{{quote_id}}/{path}", responses=_WRITE, summary=summary, name=path.replace("-", "_")
        )
        async def run(
            quote_id: UUID,
            body: ReasonRequest,
            caller: Caller,
            response: Response,
            if_match: IfMatch = None,
        ) -> QuoteResponse:
            quote = await use_cases.change_quote(
                unit_of_work,
                quote_id,
                caller,
                expected_version(if_match),
                lambda q, now: apply(q, caller, body.reason, now),
                authorize,
            )
            return answer(response, quote)

    action_with_reason(
        "reject-approval",
        "Refuse the discount (manager, admin)",
        lambda q, p, reason, now: q.reject_approval(reason, p.user_id, now),
        access.require_approver,
    )
    action_with_reason(
        "abandon",
        "Abandon, with a reason",
        lambda q, p, reason, now: q.abandon(reason, p.user_id, now),
    )

    @router.post(
        "/{quote_id}/accept",
        status_code=202,
        responses=_WRITE,
        summary="The customer accepts: the opportunity decides (202, then poll)",
    )
    async def accept(
        quote_id: UUID, caller: Caller, response: Response, if_match: IfMatch = None
    ) -> QuoteResponse:
        quote = await use_cases.accept_quote(
            unit_of_work,
            quote_id,
            principal=caller,
            deadline=policy.acceptance_deadline,
            expected_version=expected_version(if_match),
        )
        response.headers["Location"] = f"/quotes/{quote.id}"
        return answer(response, quote)

    @router.post(
        "/{quote_id}/buy-now-link",
        status_code=201,
        responses=_WRITE,
        summary="A signed, expiring link that lets the customer accept this quote",
    )
    async def buy_now_link(quote_id: UUID, caller: Caller) -> BuyNowLinkResponse:
        quote = await reader.workable(quote_id, caller)
        access.require_quote_work(caller)
        if QuoteAction.ACCEPT not in quote.allowed_actions(policy.approval_threshold_percent):
            raise QuoteActionNotAllowed(
                quote.status, QuoteAction.ACCEPT, "only a presented quote can be bought"
            )
        link = links.issue(quote.id, quote.opportunity_id, quote.valid_until, clock())
        return BuyNowLinkResponse(url=link.url, expires_at=link.expires_at)

    return router


def buy_now_routes(
    unit_of_work: UnitOfWorkFactory,
    reader: QuoteReader,
    links: BuyNowLinks,
    clock: Callable[[], datetime],
    deadline: AcceptanceDeadline,
) -> APIRouter:
    """For the customer, who has no user token: the signed link is the credential."""
    router = APIRouter(prefix="/buy-now", tags=["buy-now"])
    responses = problem_responses(403, 404, 409)

    @router.get("/{token}", responses=responses, summary="The offer behind a buy-now link")
    async def view(token: str) -> BuyNowQuoteResponse:
        quote_id, opportunity_id = links.verify(token, clock())
        return _offer(await reader.for_link(quote_id, opportunity_id))

    @router.post(
        "/{token}/accept",
        status_code=202,
        responses=responses,
        summary="Accept the offer (202: the order follows once the deal is won)",
    )
    async def accept(token: str) -> BuyNowQuoteResponse:
        quote_id, opportunity_id = links.verify(token, clock())
        return _offer(
            await use_cases.accept_quote(
                unit_of_work,
                quote_id,
                principal=None,
                deadline=deadline,
                opportunity_id=opportunity_id,
            )
        )

    return router


def saga_routes(
    reader: QuoteReader, clock: Callable[[], datetime], deadline: AcceptanceDeadline
) -> APIRouter:
    """For operators: quotes the accept-quote saga has kept waiting."""
    router = APIRouter(prefix="/sagas", tags=["operations"])
    default_wait = int(deadline.answer_within.total_seconds())

    @router.get(
        "/stuck",
        responses=problem_responses(401, 403, 422),
        summary="Quotes awaiting the opportunity's answer for longer than a threshold "
        "(operator, admin), longest waiting first",
    )
    async def stuck(
        caller: Operator,
        waiting_longer_than_seconds: Annotated[
            int, Query(ge=0, description="Default: the answer deadline")
        ] = default_wait,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> StuckAcceptancePage:
        after = decode_time_and_id(cursor) if cursor else None
        now = clock()
        since = now - timedelta(seconds=waiting_longer_than_seconds)
        page = [_stuck(q, now) for q in await reader.awaiting_answer(since, after, limit + 1)]
        items = page[:limit]
        next_cursor = None
        if len(page) > limit:
            last = items[-1]
            next_cursor = encode_time_and_id(last.waiting_since, last.quote_id)
        return StuckAcceptancePage(items=items, next_cursor=next_cursor)

    return router


def _stuck(quote: Quote, now: datetime) -> StuckAcceptanceResponse:
    request = quote.acceptance
    assert request is not None  # the query reads only quotes with an acceptance
    return StuckAcceptanceResponse(
        quote_id=quote.id,
        opportunity_id=quote.opportunity_id,
        waiting_since=request.requested_at,
        waiting_seconds=int((now - request.requested_at).total_seconds()),
        asked_again=request.asked_again,
        answer_due_at=request.answer_due_at,
        requested_by=request.requested_by,
        via=request.via,
    )


def _offer(quote: Quote) -> BuyNowQuoteResponse:
    return BuyNowQuoteResponse(
        quote_id=quote.id,
        status=quote.status,
        lines=_lines(quote),
        total=quote.total,
        valid_until=quote.valid_until,
    )


def _product(p: Product) -> ProductResponse:
    return ProductResponse(
        id=p.id,
        sku=p.sku,
        name=p.name,
        description=p.description,
        list_price=p.list_price,
        billing=p.billing,
        billing_period=p.billing_period,
        retired_at=p.retired_at,
        version=p.version,
    )


def _bundle(b: Bundle) -> BundleResponse:
    return BundleResponse(
        id=b.id,
        sku=b.sku,
        name=b.name,
        description=b.description,
        price=b.price,
        billing_period=b.billing_period,
        items=[BundleItemBody(product_id=i.product_id, quantity=i.quantity) for i in b.items],
        retired_at=b.retired_at,
        version=b.version,
    )


def _given(body: Any) -> dict[str, Any]:
    return {name: getattr(body, name) for name in body.model_fields_set}


def catalog_routes(unit_of_work: UnitOfWorkFactory, reader: QuoteReader) -> APIRouter:
    router = APIRouter(tags=["catalog"])
    admin = problem_responses(401, 403, 404, 409, 422)

    @router.post("/products", status_code=201, responses=admin, summary="Add a product (admin)")
    async def create_product(body: ProductRequest, caller: Caller) -> ProductResponse:
        return _product(
            await catalog.create_product(
                unit_of_work,
                caller,
                sku=body.sku,
                name=body.name,
                description=body.description,
                list_price=body.list_price,
                billing=body.billing,
                billing_period=body.billing_period,
            )
        )

    @router.get("/products", responses=_READ, summary="The catalog's products")
    async def list_products(caller: Caller, include_retired: bool = False) -> list[ProductResponse]:
        return [_product(p) for p in await reader.products(include_retired)]

    @router.get("/products/{product_id}", responses=_READ, summary="One product")
    async def get_product(product_id: UUID, caller: Caller) -> ProductResponse:
        return _product(await reader.product(product_id))

    @router.patch("/products/{product_id}", responses=admin, summary="Change a product (admin)")
    async def update_product(
        product_id: UUID, body: ProductChanges, caller: Caller, if_match: IfMatch = None
    ) -> ProductResponse:
        return _product(
            await catalog.update_product(
                unit_of_work, caller, product_id, expected_version(if_match), **_given(body)
            )
        )

    @router.post(
        "/products/{product_id}/retire",
        responses=admin,
        summary="Retire a product: kept on quotes, no longer quotable (admin)",
    )
    async def retire_product(product_id: UUID, caller: Caller) -> ProductResponse:
        return _product(await catalog.retire_product(unit_of_work, caller, product_id))

    @router.post(
        "/bundles", status_code=201, responses=admin, summary="Add a subscription bundle (admin)"
    )
    async def create_bundle(body: BundleRequest, caller: Caller) -> BundleResponse:
        return _bundle(
            await catalog.create_bundle(
                unit_of_work,
                caller,
                sku=body.sku,
                name=body.name,
                description=body.description,
                price=body.price,
                billing_period=body.billing_period,
                items=[BundleItem(i.product_id, i.quantity) for i in body.items],
            )
        )

    @router.get("/bundles", responses=_READ, summary="The catalog's bundles")
    async def list_bundles(caller: Caller, include_retired: bool = False) -> list[BundleResponse]:
        return [_bundle(b) for b in await reader.bundles(include_retired)]

    @router.get("/bundles/{bundle_id}", responses=_READ, summary="One bundle")
    async def get_bundle(bundle_id: UUID, caller: Caller) -> BundleResponse:
        return _bundle(await reader.bundle(bundle_id))

    @router.patch("/bundles/{bundle_id}", responses=admin, summary="Change a bundle (admin)")
    async def update_bundle(
        bundle_id: UUID, body: BundleChanges, caller: Caller, if_match: IfMatch = None
    ) -> BundleResponse:
        fields = _given(body)
        if "items" in fields:
            fields["items"] = [BundleItem(i.product_id, i.quantity) for i in body.items]
        return _bundle(
            await catalog.update_bundle(
                unit_of_work, caller, bundle_id, expected_version(if_match), **fields
            )
        )

    @router.post("/bundles/{bundle_id}/retire", responses=admin, summary="Retire a bundle (admin)")
    async def retire_bundle(bundle_id: UUID, caller: Caller) -> BundleResponse:
        return _bundle(await catalog.retire_bundle(unit_of_work, caller, bundle_id))

    return router

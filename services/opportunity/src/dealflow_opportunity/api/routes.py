"""The opportunity endpoints: thin adapters from HTTP to the use cases."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from dealflow_common.auth import Principal
from dealflow_common.contracts.opportunity import (
    Competitor,
    DealContact,
    DecisionIssue,
    NoteReason,
    Share,
    Stage,
)
from dealflow_common.contracts.trusted import trusted
from dealflow_common.errors import RuleViolated
from dealflow_common.http.audit import record_domain_refusal
from dealflow_common.http.fields import ISO_DATE
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
    from_domain_error,
    invalid_field,
    problem_responses,
    problem_type,
)
from dealflow_common.http.security import Caller
from dealflow_common.idempotency import Idempotency
from dealflow_opportunity.adapters import search
from dealflow_opportunity.adapters.repository import OpportunityFilter
from dealflow_opportunity.api.schemas import (
    AssignmentResponse,
    BulkAssignRequest,
    BulkResponse,
    BulkResult,
    BulkSelection,
    BulkStageRequest,
    CompetitorChange,
    CompetitorRequest,
    CustomFieldChangeRequest,
    CustomFieldRequest,
    CustomFieldResponse,
    DealContactChange,
    DealContactRequest,
    DecisionIssueChange,
    DecisionIssueRequest,
    LoseRequest,
    NoteRequest,
    NoteResponse,
    OpenOpportunityRequest,
    OpportunityPage,
    OpportunityResponse,
    OwnerRequest,
    SalesHistoryResponse,
    ShareRequest,
    StageMachineResponse,
    StageMoveRequest,
    TeamRequest,
    UpdateOpportunityRequest,
)
from dealflow_opportunity.application import bulk, use_cases
from dealflow_opportunity.application import custom_fields as custom_field_use_cases
from dealflow_opportunity.application.queries import OpportunityReader
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain import custom_fields, stages
from dealflow_opportunity.domain.custom_fields import CustomFieldDefinition, FieldType
from dealflow_opportunity.domain.model import Opportunity, OpportunityChanges, RecordKind

_READ, _WRITE = READS, CHANGES
_IdempotencyKey = Annotated[
    str | None,
    idempotency_key_header(
        "Makes a retried request open one deal: the same key with the same body is "
        "answered with the deal the first request opened (`Idempotent-Replayed: true`); "
        "with another body, 422. Send one when the request may be retried (a timeout, "
        "a 500 outcome-unknown)."
    ),
]


def to_response(opportunity: Opportunity) -> OpportunityResponse:
    # The state's fields as the aggregate holds them, each validated on its way in (a
    # request's body, a row read, an event's payload): not built into `state()` first,
    # whose pydantic attributes cost a stage move 3.8 % more instructions to read back.
    source = opportunity.next_action_source
    values = opportunity.state_fields()
    values["allowed_moves"] = opportunity.allowed_moves()
    values["next_action_source"] = source.value if source else None
    return trusted(OpportunityResponse, values)


def _with_etag(response: Response, opportunity: Opportunity) -> OpportunityResponse:
    response.headers["ETag"] = etag(opportunity.version)
    return to_response(opportunity)


def opportunity_routes(
    unit_of_work: Callable[[], OpportunityUnitOfWork], reader: OpportunityReader
) -> APIRouter:
    router = APIRouter(prefix="/opportunities", tags=["opportunities"])

    @router.post(
        "",
        status_code=201,
        responses=problem_responses(401, 403, 409, 422),
        summary="Open an opportunity (stage lead)",
    )
    async def open_opportunity(
        body: OpenOpportunityRequest,
        caller: Caller,
        response: Response,
        idempotency_key: _IdempotencyKey = None,
    ) -> OpportunityResponse:
        given: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set}
        opened = await use_cases.open_opportunity(
            unit_of_work(),
            caller,
            Idempotency.of(idempotency_key, "opportunity", body, sent_only=True),
            **given,
        )
        response.headers["Location"] = f"/opportunities/{opened.opportunity.id}"
        answered_again(response, opened.replayed)
        return _with_etag(response, opened.opportunity)

    @router.get(
        "",
        responses=_READ,
        summary="List opportunities, newest first",
        description="Besides the parameters below, `cf.<key>=<value>` keeps the deals whose "
        "custom field `<key>` has that value (text, number, date and choice fields; "
        "repeat for several fields).",
    )
    async def list_opportunities(
        request: Request,
        caller: Caller,
        stage: Annotated[list[Stage] | None, Query(description="Repeat for several")] = None,
        owner: Annotated[str | None, Query(max_length=200)] = None,
        team: Annotated[str | None, Query(max_length=100)] = None,
        customer: Annotated[str | None, Query(max_length=100, description="Customer id")] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                description="Full-text search over title, description, customer name and "
                "notes: every word must be a word of the deal, the last may be the "
                "beginning of one (no stemming)",
            ),
        ] = None,
        expected_close_from: Annotated[date | None, ISO_DATE] = None,
        expected_close_to: Annotated[date | None, ISO_DATE] = None,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> OpportunityPage:
        after = decode_time_and_id(cursor) if cursor else None
        if q is not None:
            _check_search(q)
        where = OpportunityFilter(
            stages=stage or (),
            owner=owner,
            team_id=team,
            customer_id=customer,
            text=q,
            close_from=expected_close_from,
            close_to=expected_close_to,
            custom_fields=await _custom_field_filters(
                [
                    (name[3:], value)
                    for name, value in request.query_params.multi_items()
                    if name.startswith("cf.")
                ],
                reader,
            ),
        )
        page = await reader.page(caller, where, after, limit + 1)
        items = page[:limit]
        next_cursor = None
        if len(page) > limit:
            last = items[-1]
            next_cursor = encode_time_and_id(last.created_at, last.id)
        return OpportunityPage(items=[to_response(o) for o in items], next_cursor=next_cursor)

    @router.get("/{opportunity_id}", responses=_READ, summary="One opportunity")
    async def get_opportunity(
        opportunity_id: UUID, caller: Caller, response: Response
    ) -> OpportunityResponse:
        return _with_etag(response, await reader.get(opportunity_id, caller))

    @router.patch("/{opportunity_id}", responses=_WRITE, summary="Change fields of an open deal")
    async def update_opportunity(
        opportunity_id: UUID,
        body: UpdateOpportunityRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        changes = OpportunityChanges(
            **{
                name: getattr(body, name)
                for name in body.model_fields_set
                if name != "custom_fields"
            }
        )
        opportunity = await use_cases.update_opportunity(
            unit_of_work(),
            opportunity_id,
            caller,
            expected_version(if_match),
            changes,
            body.custom_fields if "custom_fields" in body.model_fields_set else None,
        )
        return _with_etag(response, opportunity)

    @router.post(
        "/{opportunity_id}/stage",
        responses=_WRITE,
        summary="Move to another stage under the state machine",
    )
    async def move_stage(
        opportunity_id: UUID,
        body: StageMoveRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.move_stage(
            unit_of_work(),
            opportunity_id,
            caller,
            expected_version(if_match),
            body.stage,
            body.probability,
            body.lost_reason,
            body.note,
        )
        return _with_etag(response, opportunity)

    @router.post("/{opportunity_id}/lose", responses=_WRITE, summary="Close as lost, with a reason")
    async def lose_opportunity(
        opportunity_id: UUID,
        body: LoseRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.lose_opportunity(
            unit_of_work(),
            opportunity_id,
            caller,
            expected_version(if_match),
            body.reason,
            body.note,
        )
        return _with_etag(response, opportunity)

    @router.post("/{opportunity_id}/owners", responses=_WRITE, summary="Add an owner")
    async def assign_owner(
        opportunity_id: UUID,
        body: OwnerRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.assign_owner(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), body.user_id
        )
        return _with_etag(response, opportunity)

    @router.delete(
        "/{opportunity_id}/owners/{user_id}", responses=_WRITE, summary="Remove an owner"
    )
    async def unassign_owner(
        opportunity_id: UUID,
        user_id: str,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.unassign_owner(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), user_id
        )
        return _with_etag(response, opportunity)

    @router.post(
        "/{opportunity_id}/claim", responses=_WRITE, summary="Take a deal from your team's queue"
    )
    async def claim_opportunity(
        opportunity_id: UUID, caller: Caller, response: Response, if_match: IfMatch = None
    ) -> OpportunityResponse:
        opportunity = await use_cases.claim_opportunity(
            unit_of_work(), opportunity_id, caller, expected_version(if_match)
        )
        return _with_etag(response, opportunity)

    @router.put(
        "/{opportunity_id}/team",
        responses=_WRITE,
        summary="Hand the deal to a team's queue until a rep claims it",
    )
    async def assign_team(
        opportunity_id: UUID,
        body: TeamRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.assign_team(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), body.team_id
        )
        return _with_etag(response, opportunity)

    @router.get(
        "/{opportunity_id}/shares",
        responses=_READ,
        summary="The Sharing tab: users and teams who may read or edit the deal",
    )
    async def list_shares(opportunity_id: UUID, caller: Caller) -> list[Share]:
        return list((await reader.get(opportunity_id, caller)).shares)

    @router.post(
        "/{opportunity_id}/shares",
        responses=_WRITE,
        summary="Share the deal with a user or a team (again: change the grant)",
    )
    async def share_opportunity(
        opportunity_id: UUID,
        body: ShareRequest,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        share = Share(kind=body.kind, id=body.id, grant=body.grant)
        opportunity = await use_cases.share_opportunity(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), share
        )
        return _with_etag(response, opportunity)

    @router.delete(
        "/{opportunity_id}/shares/{kind}/{holder_id}",
        responses=_WRITE,
        summary="Revoke the share of a user or a team",
    )
    async def unshare_opportunity(
        opportunity_id: UUID,
        kind: Literal["user", "team"],
        holder_id: Annotated[str, Path(min_length=1, max_length=200)],
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.unshare_opportunity(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), kind, holder_id
        )
        return _with_etag(response, opportunity)

    @router.post(
        "/{opportunity_id}/notes",
        status_code=201,
        responses=_WRITE,
        summary="Add a note with its reason",
    )
    async def add_note(opportunity_id: UUID, body: NoteRequest, caller: Caller) -> NoteResponse:
        _, note = await use_cases.add_note(
            unit_of_work(), opportunity_id, caller, NoteReason(body.reason), body.text
        )
        return NoteResponse(
            id=note.id,
            reason=note.reason,
            text=note.text,
            added_by=note.added_by,
            added_at=note.added_at,
        )

    @router.get("/{opportunity_id}/notes", responses=_READ, summary="Notes, oldest first")
    async def list_notes(opportunity_id: UUID, caller: Caller) -> list[NoteResponse]:
        return [
            NoteResponse(
                id=n.id, reason=n.reason, text=n.text, added_by=n.added_by, added_at=n.added_at
            )
            for n in await reader.notes(opportunity_id, caller)
        ]

    @router.get(
        "/{opportunity_id}/history", responses=_READ, summary="Sales history: every stage move"
    )
    async def sales_history(opportunity_id: UUID, caller: Caller) -> list[SalesHistoryResponse]:
        return [
            SalesHistoryResponse(
                from_stage=e.from_stage,
                to_stage=e.to_stage,
                at=e.changed_at,
                by=e.changed_by,
                days_in_previous_stage=e.days_in_previous_stage,
                owners=list(e.owners),
                probability=e.probability,
            )
            for e in await reader.history(opportunity_id, caller)
        ]

    @router.get(
        "/{opportunity_id}/assignments",
        responses=_READ,
        summary="Assignment history: who owned it, when",
    )
    async def assignment_history(opportunity_id: UUID, caller: Caller) -> list[AssignmentResponse]:
        return [
            AssignmentResponse(
                action=a.action,
                user_id=a.user_id,
                team_id=a.team_id,
                owners=list(a.owners),
                by=a.assigned_by,
                at=a.assigned_at,
            )
            for a in await reader.assignments(opportunity_id, caller)
        ]

    for kind, path, record_type, create_body, change_body in _RECORDS:
        _record_routes(
            router, unit_of_work, reader, kind, path, record_type, create_body, change_body
        )

    return router


_RECORDS: list[tuple[RecordKind, str, type[Any], type[BaseModel], type[BaseModel]]] = [
    ("competitors", "competitors", Competitor, CompetitorRequest, CompetitorChange),
    (
        "decision_issues",
        "decision-issues",
        DecisionIssue,
        DecisionIssueRequest,
        DecisionIssueChange,
    ),
    ("contacts", "contacts", DealContact, DealContactRequest, DealContactChange),
]


def _record_routes(
    router: APIRouter,
    unit_of_work: Callable[[], OpportunityUnitOfWork],
    reader: OpportunityReader,
    kind: RecordKind,
    path: str,
    record_type: type[Any],
    create_body: type[BaseModel],
    change_body: type[BaseModel],
) -> None:
    """List, add, change and remove one kind of the deal's records (competitors,
    decision issues, contacts); every change is a new version of the deal."""
    what = path.replace("-", " ")

    async def list_records(opportunity_id: UUID, caller: Caller) -> list[Any]:
        return list(getattr(await reader.get(opportunity_id, caller), kind))

    async def add(
        opportunity_id: UUID,
        body: create_body,  # type: ignore[valid-type]
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        record = record_type(id=uuid.uuid4(), **body.model_dump())  # type: ignore[attr-defined]
        opportunity = await use_cases.add_record(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), kind, record
        )
        response.headers["Location"] = f"/opportunities/{opportunity_id}/{path}/{record.id}"
        return _with_etag(response, opportunity)

    async def change(
        opportunity_id: UUID,
        record_id: UUID,
        body: change_body,  # type: ignore[valid-type]
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        given = {n: getattr(body, n) for n in body.model_fields_set}  # type: ignore[attr-defined]
        opportunity = await use_cases.change_record(
            unit_of_work(),
            opportunity_id,
            caller,
            expected_version(if_match),
            kind,
            record_id,
            given,
        )
        return _with_etag(response, opportunity)

    async def remove(
        opportunity_id: UUID,
        record_id: UUID,
        caller: Caller,
        response: Response,
        if_match: IfMatch = None,
    ) -> OpportunityResponse:
        opportunity = await use_cases.remove_record(
            unit_of_work(), opportunity_id, caller, expected_version(if_match), kind, record_id
        )
        return _with_etag(response, opportunity)

    # The module postpones annotations; these name the request bodies of this kind.
    add.__annotations__["body"] = create_body
    change.__annotations__["body"] = change_body

    router.add_api_route(
        f"/{{opportunity_id}}/{path}",
        list_records,
        methods=["GET"],
        response_model=list[record_type],  # type: ignore[valid-type]
        responses=_READ,
        summary=f"The deal's {what}",
        name=f"list_{kind}",
    )
    router.add_api_route(
        f"/{{opportunity_id}}/{path}",
        add,
        methods=["POST"],
        status_code=201,
        responses=_WRITE,
        summary=f"Add one of the deal's {what}",
        name=f"add_{kind}",
    )
    router.add_api_route(
        f"/{{opportunity_id}}/{path}/{{record_id}}",
        change,
        methods=["PATCH"],
        responses=_WRITE,
        summary=f"Change one of the deal's {what}",
        name=f"change_{kind}",
    )
    router.add_api_route(
        f"/{{opportunity_id}}/{path}/{{record_id}}",
        remove,
        methods=["DELETE"],
        responses=_WRITE,
        summary=f"Remove one of the deal's {what}",
        name=f"remove_{kind}",
    )


def _check_search(query: str, field: str = "q") -> None:
    # A NUL byte is refused by PostgreSQL text anyway; a query of punctuation only
    # would match every deal, which is a list, not a search.
    reason = None
    if "\x00" in query:
        reason = "must not contain a NUL character"
    elif not search.terms_of(query):
        reason = "give at least one word to search for"
    if reason:
        raise invalid_field(field, reason)


async def _custom_field_filters(
    given: list[tuple[str, str]], reader: OpportunityReader, field: str = "cf."
) -> list[tuple[str, str]]:
    """(key, value) filters on custom fields, each value spelled as values are kept;
    `field` names the parameter in an error (`cf.<key>`, `filter.custom_fields.<key>`)."""
    if not given:
        return []
    definitions = await reader.custom_fields()
    filters = []
    for key, value in given:
        definition = definitions.get(key)
        if definition is None:
            raise invalid_field(f"{field}{key}", "no such custom field is defined")
        try:
            filters.append((definition.key, custom_fields.filter_value(definition, value)))
        except RuleViolated as error:
            raise RuleViolated(f"{field}{key}", error.detail) from None
    return filters


def _definition_response(definition: CustomFieldDefinition) -> CustomFieldResponse:
    return CustomFieldResponse(
        key=definition.key,
        label=definition.label,
        type=definition.type.value,
        required=definition.required,
        choices=list(definition.choices),
        tab=definition.tab,
        position=definition.position,
        retired=definition.retired,
        created_by=definition.created_by,
        created_at=definition.created_at,
        updated_at=definition.updated_at,
    )


def custom_field_routes(
    unit_of_work: Callable[[], OpportunityUnitOfWork], reader: OpportunityReader
) -> APIRouter:
    router = APIRouter(prefix="/custom-fields", tags=["custom fields"])

    @router.get(
        "",
        responses=problem_responses(401, 422, 503),
        summary="The custom fields of deals, in the order a deal shows them",
    )
    async def list_custom_fields(
        caller: Caller,
        include_retired: bool = False,
    ) -> list[CustomFieldResponse]:
        return [
            _definition_response(d)
            for d in (await reader.custom_fields()).values()
            if include_retired or not d.retired
        ]

    @router.post(
        "",
        status_code=201,
        responses=problem_responses(401, 403, 409, 422),
        summary="Define a custom field (admins)",
    )
    async def define_custom_field(
        body: CustomFieldRequest, caller: Caller, response: Response
    ) -> CustomFieldResponse:
        definition = await custom_field_use_cases.define_field(
            unit_of_work(),
            caller,
            key=body.key,
            label=body.label,
            type=FieldType(body.type),
            required=body.required,
            choices=body.choices,
            tab=body.tab,
        )
        response.headers["Location"] = f"/custom-fields/{definition.key}"
        return _definition_response(definition)

    @router.patch(
        "/{key}",
        responses=problem_responses(401, 403, 404, 422),
        summary="Change or retire a custom field (admins); its key and type stay",
    )
    async def change_custom_field(
        key: Annotated[str, Path(max_length=50)], body: CustomFieldChangeRequest, caller: Caller
    ) -> CustomFieldResponse:
        definition = await custom_field_use_cases.change_field(
            unit_of_work(),
            caller,
            key,
            {name: getattr(body, name) for name in body.model_fields_set},
        )
        return _definition_response(definition)

    return router


def bulk_routes(
    unit_of_work: Callable[[], OpportunityUnitOfWork], reader: OpportunityReader, maximum: int
) -> APIRouter:
    """Included before `opportunity_routes`, whose `/{opportunity_id}/stage` would
    otherwise take `/bulk/stage` for a deal with the id "bulk"."""
    router = APIRouter(prefix="/opportunities/bulk", tags=["opportunities"])

    async def selected(caller: Principal, body: BulkSelection) -> list[UUID]:
        where = None
        if body.filter is not None:
            f = body.filter
            if f.q is not None:
                _check_search(f.q, "filter.q")
            where = OpportunityFilter(
                stages=f.stage,
                owner=f.owner,
                team_id=f.team,
                customer_id=f.customer,
                text=f.q,
                close_from=f.expected_close_from,
                close_to=f.expected_close_to,
                custom_fields=await _custom_field_filters(
                    list(f.custom_fields.items()), reader, "filter.custom_fields."
                ),
            )
        return await bulk.deals_to_change(reader, caller, body.ids, where, maximum)

    def answer(request: Request, outcomes: list[bulk.BulkOutcome]) -> BulkResponse:
        results = []
        for outcome in outcomes:
            problem = None
            if outcome.refusal is not None:
                record_domain_refusal(request, outcome.refusal)
                refused = from_domain_error(outcome.refusal)
                problem = {
                    "type": problem_type(refused.slug),
                    "title": refused.title,
                    "status": refused.status,
                    "detail": refused.detail,
                    **refused.extensions,
                }
            results.append(
                BulkResult(
                    id=outcome.opportunity_id,
                    outcome=outcome.outcome,
                    version=outcome.opportunity.version if outcome.opportunity else None,
                    problem=problem,
                )
            )
        return BulkResponse(
            results=results,
            changed=sum(r.outcome == "changed" for r in results),
            unchanged=sum(r.outcome == "unchanged" for r in results),
            refused=sum(r.outcome == "refused" for r in results),
            not_found=sum(r.outcome == "not_found" for r in results),
        )

    @router.post(
        "/stage",
        responses=problem_responses(401, 422),
        summary="Move many deals to a stage, each under the state machine and its access",
    )
    async def bulk_move_stage(
        body: BulkStageRequest, caller: Caller, request: Request
    ) -> BulkResponse:
        ids = await selected(caller, body)
        outcomes = await bulk.change_each(
            ids,
            lambda opportunity_id: use_cases.move_stage(
                unit_of_work(),
                opportunity_id,
                caller,
                None,
                body.stage,
                body.probability,
                body.lost_reason,
                body.note,
            ),
        )
        return answer(request, outcomes)

    @router.post(
        "/assign",
        responses=problem_responses(401, 422),
        summary="Add an owner to many deals, or hand them to a team, each under its access",
    )
    async def bulk_assign(
        body: BulkAssignRequest, caller: Caller, request: Request
    ) -> BulkResponse:
        ids = await selected(caller, body)
        user_id, team_id = body.user_id, body.team_id

        async def assign(opportunity_id: UUID) -> Opportunity:
            if user_id is not None:
                return await use_cases.assign_owner(
                    unit_of_work(), opportunity_id, caller, None, user_id
                )
            assert team_id is not None
            return await use_cases.assign_team(
                unit_of_work(), opportunity_id, caller, None, team_id
            )

        return answer(request, await bulk.change_each(ids, assign))

    return router


def stage_machine_routes() -> APIRouter:
    router = APIRouter(tags=["opportunities"])

    @router.get(
        "/stages",
        responses=problem_responses(401),
        summary="The stage machine: stages, default probabilities, transitions",
    )
    async def stage_machine(caller: Caller) -> StageMachineResponse:
        return StageMachineResponse(
            stages=list(stages.TRANSITIONS),
            open_stages=list(stages.OPEN_STAGES),
            default_probability=dict(stages.DEFAULT_PROBABILITY),
            transitions=[
                {"from": source.value, "to": target.value, "trigger": trigger.value}
                for source, by_trigger in stages.TRANSITIONS.items()
                for trigger, reachable in by_trigger.items()
                for target in sorted(reachable, key=list(Stage).index)
            ],
            mermaid=stages.mermaid_diagram(),
        )

    return router

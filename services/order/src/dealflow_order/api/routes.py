"""Order endpoints (read-only here: orders are created by the accept-quote saga).

Orders are read by managers, admins and operators: this service keeps no projection
of who owns which deal yet, so reps see their order's id on the opportunity instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.quote import QuoteLineData
from dealflow_common.db import READ_ONLY
from dealflow_common.http.problems import problem_responses
from dealflow_common.http.security import requires
from dealflow_order.adapters.repository import OrderRepository
from dealflow_order.domain.model import Order, OrderNotFound

Reader = Annotated[Principal, Depends(requires(Role.MANAGER, Role.ADMIN, Role.OPERATOR))]


class OrderResponse(BaseModel):
    id: UUID
    opportunity_id: UUID
    quote_id: UUID
    status: str
    lines: list[QuoteLineData]
    total: Money
    created_at: datetime
    version: int


def _response(order: Order) -> OrderResponse:
    return OrderResponse(
        id=order.id,
        opportunity_id=order.opportunity_id,
        quote_id=order.quote_id,
        status=order.status,
        lines=order.lines,
        total=order.total,
        created_at=order.created_at,
        version=order.version,
    )


def order_routes(engine: AsyncEngine) -> APIRouter:
    router = APIRouter(prefix="/orders", tags=["orders"])
    responses = problem_responses(401, 403, 404, 422)

    @router.get("", responses=responses, summary="The orders of an opportunity")
    async def list_orders(opportunity_id: UUID, caller: Reader) -> list[OrderResponse]:
        async with engine.connect() as connection:
            connection = await connection.execution_options(**READ_ONLY)
            return [
                _response(o)
                for o in await OrderRepository(connection).of_opportunity(opportunity_id)
            ]

    @router.get("/{order_id}", responses=responses, summary="One order")
    async def get_order(order_id: UUID, caller: Reader) -> OrderResponse:
        async with engine.connect() as connection:
            connection = await connection.execution_options(**READ_ONLY)
            order = await OrderRepository(connection).find(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return _response(order)

    return router

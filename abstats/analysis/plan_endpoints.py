"""``POST /v1/plan``: units per variant and days to a decision before launch
(:mod:`abstats.engine.plan`; ``docs/api.md``)."""

from __future__ import annotations

from fastapi import APIRouter

from abstats.deps import ReadKey
from abstats.engine.plan import Plan, PlanRequest, plan
from abstats.errors import FieldProblem, InvalidInput

router = APIRouter(prefix="/v1", tags=["planning"])


def make_plan(request: PlanRequest) -> Plan:
    """The plan, or an :class:`InvalidInput` that says what to change."""
    try:
        return plan(request)
    except ValueError as exc:
        raise InvalidInput(
            f"No plan for these inputs: {exc}", errors=[FieldProblem("power", str(exc))]
        ) from exc


@router.post("/plan", response_model=Plan)
def post_plan(body: PlanRequest, _: ReadKey) -> Plan:
    """Units per variant and days to a decision for a metric, an effect, traffic, a split or
    ramp, and an inference method."""
    return make_plan(body)

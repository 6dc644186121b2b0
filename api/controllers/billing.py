"""Finance: the plan, usage, invoices, the Stripe customer portal, reconciliation; and the
endpoint Stripe sends its webhooks to."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from litestar import Controller, Response, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from api.context import AnyRequest, deps_of, provide_origin, provide_subject, transaction
from api.problems import AUTH_RESPONSES, problem_spec
from billing import finance
from billing.accounts import service as accounts
from billing.errors import BillingUnavailable
from tenancy.models import Origin, Subject

Day = Annotated[
    date | None,
    Parameter(description="A day (YYYY-MM-DD) in the tenant's time zone; `end` is exclusive"),
]
_RESPONSES = {
    **AUTH_RESPONSES,
    409: problem_spec("The tenant uses more than the new plan allows"),
    503: problem_spec("Stripe cannot be reached just now"),
}


class BillingController(Controller):
    path = "/v1/billing"
    tags = ["billing"]
    dependencies = {"subject": Provide(provide_subject), "origin": Provide(provide_origin)}
    security = [{"bearerAuth": []}]

    @get("/", responses=_RESPONSES, summary="The plan, its prices and the account's standing")
    async def overview(self, request: AnyRequest, subject: Subject) -> finance.BillingOverview:
        async with transaction(request, subject) as conn:
            return await finance.overview(conn, subject)

    @put("/plan", responses=_RESPONSES, summary="Change plan (applied to Stripe by the worker)")
    async def change_plan(
        self, request: AnyRequest, subject: Subject, origin: Origin, data: finance.PlanChangeIn
    ) -> finance.BillingOverview:
        async with transaction(request, subject) as conn:
            return await finance.change_plan(conn, subject, origin, data)

    @get("/usage", responses=_RESPONSES, summary="Usage by meter and day, from the ledger")
    async def usage(
        self, request: AnyRequest, subject: Subject, start: Day = None, end: Day = None
    ) -> finance.Usage:
        async with transaction(request, subject) as conn:
            return await finance.usage(conn, subject, start, end)

    @get("/usage.csv", responses=_RESPONSES, summary="Every ledger row of a period, as CSV")
    async def usage_csv(
        self, request: AnyRequest, subject: Subject, start: Day = None, end: Day = None
    ) -> Response[str]:
        async with transaction(request, subject) as conn:
            body, first, last = await finance.usage_csv(conn, subject, start, end)
        name = f"usage-{first.isoformat()}-{last.isoformat()}.csv"
        return Response(
            body,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @get("/invoices", responses=_RESPONSES, summary="The tenant's invoices, from Stripe")
    async def invoices(self, request: AnyRequest, subject: Subject) -> finance.Invoices:
        async with transaction(request, subject) as conn:
            return await finance.invoices(conn, deps_of(request).billing, subject)

    @post(
        "/portal-session",
        responses=_RESPONSES,
        summary="A Stripe customer-portal link: payment methods, invoices, paying what is due",
        status_code=201,
    )
    async def portal_session(
        self, request: AnyRequest, subject: Subject, data: finance.PortalIn | None = None
    ) -> finance.PortalSession:
        deps = deps_of(request)
        async with transaction(request, subject) as conn:
            return await finance.portal(
                conn,
                deps.billing,
                subject,
                data or finance.PortalIn(),
                f"{deps.settings.base_url}/billing",
            )

    @get(
        "/reconciliation",
        responses=_RESPONSES,
        summary="The ledger against what Stripe holds, per meter, with any gap explained",
    )
    async def reconciliation(
        self, request: AnyRequest, subject: Subject, start: Day = None, end: Day = None
    ) -> finance.Reconciliation:
        async with transaction(request, subject) as conn:
            return await finance.reconciliation(conn, deps_of(request).billing, subject, start, end)


class StripeWebhookController(Controller):
    path = "/v1/stripe"
    include_in_schema = False

    @post("/webhooks", status_code=202)
    async def receive(self, request: AnyRequest) -> Response[bytes]:
        """Verified, stored once by event id, answered 202; the worker handles it."""
        deps = deps_of(request)
        if deps.billing is None:
            raise BillingUnavailable("Billing is not connected to Stripe on this server.")
        payload = await request.body()
        event = deps.billing.verify_webhook(payload, request.headers.get("stripe-signature", ""))
        await accounts.store_webhook(deps.pool, event)
        return Response(b"", status_code=202)

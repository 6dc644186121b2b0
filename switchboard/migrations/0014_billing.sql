-- Billing: the tenant's time zone (days are counted in it), plan prices, the Stripe account of
-- each tenant, spans of metered things built from events, the usage ledger (append-only), what
-- of it has been sent to Stripe, and Stripe's webhook events stored once by id.

alter table tenants add column time_zone text not null default 'UTC'
    check (length(time_zone) between 1 and 64);

-- Prices in the smallest currency unit (cents). The Stripe catalog is built from these rows.
alter table plans
    add column currency           text not null default 'usd',
    add column monthly_cents      int not null default 0 check (monthly_cents >= 0),
    add column seat_day_cents     int not null default 0 check (seat_day_cents >= 0),
    add column minute_cents       int not null default 0 check (minute_cents >= 0),
    add column number_month_cents int not null default 0 check (number_month_cents >= 0);
update plans set monthly_cents = 0, seat_day_cents = 0, minute_cents = 0, number_month_cents = 0
    where name = 'trial';
update plans set monthly_cents = 4900, seat_day_cents = 150, minute_cents = 2,
    number_month_cents = 100 where name = 'starter';
update plans set monthly_cents = 19900, seat_day_cents = 120, minute_cents = 2,
    number_month_cents = 100 where name = 'growth';
update plans set monthly_cents = 99900, seat_day_cents = 100, minute_cents = 1,
    number_month_cents = 80 where name = 'enterprise';

-- One per tenant: its Stripe customer and subscription as last seen, and the plan the tenant
-- asked for (applied to Stripe by the worker; `plan_change_key` makes that call idempotent).
create table billing_accounts (
    tenant_id              uuid primary key references tenants (tenant_id),
    stripe_customer_id     text unique,
    stripe_subscription_id text unique,
    subscription_status    text,
    stripe_plan            text references plans (name),
    plan_change_key        uuid,
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    past_due_since         timestamptz,
    cancelled_at           timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);

-- What existed when, as the events told it: a seat from seat.created to seat.released, a number
-- from number.purchased to number.released. Seat-days and number-months are counted from these.
create table metered_spans (
    tenant_id  uuid not null references tenants (tenant_id),
    kind       text not null check (kind in ('seat', 'number')),
    item_id    uuid not null,
    started_at timestamptz not null,
    ended_at   timestamptz,
    primary key (tenant_id, kind, item_id),
    check (ended_at is null or ended_at >= started_at)
);

-- The usage ledger. A row is never changed or deleted: a correction is a new row whose key
-- starts with 'correction:' and that names the row it corrects. `key` says exactly what was
-- measured (seat_day:<seat>:<day>, minutes:<call>, number_month:<number>:<month>) and is the
-- meter event's `identifier` at Stripe, so sending a row twice is harmless.
create table usage_ledger (
    tenant_id   uuid not null references tenants (tenant_id),
    id          bigint generated always as identity,
    key         text not null check (length(key) between 1 and 100),
    meter       text not null check (meter in ('seat_days', 'voice_minutes', 'number_months')),
    quantity    bigint not null,
    usage_day   date not null,
    occurred_at timestamptz not null,
    source      text not null check (source in ('seat', 'call', 'number', 'correction')),
    source_id   text not null,
    detail      jsonb not null default '{}'::jsonb,
    corrects    text,
    recorded_at timestamptz not null default now(),
    primary key (tenant_id, id),
    unique (tenant_id, key)
);
create index usage_ledger_day on usage_ledger (tenant_id, usage_day);

-- Ledger rows Stripe has accepted (as meter events with identifier = key).
create table usage_sent (
    tenant_id  uuid not null references tenants (tenant_id),
    key        text not null,
    sent_at    timestamptz not null default now(),
    primary key (tenant_id, key),
    foreign key (tenant_id, key) references usage_ledger (tenant_id, key)
);

do $$
declare t text;
begin
    foreach t in array array['billing_accounts', 'metered_spans', 'usage_ledger', 'usage_sent']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end $$;
grant select, insert, update on billing_accounts, metered_spans to switchboard_app;
-- Append-only for the app: no update, no delete.
grant select, insert on usage_ledger, usage_sent to switchboard_app;

-- Stripe's webhook events, platform-wide (they arrive before we know the tenant): stored once by
-- Stripe's event id, then handled by the worker.
create table stripe_events (
    id              text primary key,
    type            text not null,
    created         timestamptz not null,
    payload         jsonb not null,
    received_at     timestamptz not null default now(),
    for_tenant      uuid,            -- resolved from the customer when known (not RLS: platform)
    attempts        int not null default 0,
    next_attempt_at timestamptz not null default now(),
    handled_at      timestamptz,
    outcome         text,
    last_error      text
);
create index stripe_events_pending on stripe_events (next_attempt_at) where handled_at is null;
grant select, insert, update on stripe_events to switchboard_app;

-- Cross-tenant reads for the billing worker, as narrow resolver functions.
grant select on billing_accounts, usage_ledger, usage_sent, metered_spans to switchboard_resolver;

set local role switchboard_resolver;

-- Tenants to sweep for seat-days and number-months, with the zone their days are counted in.
create function sb_billing_tenants()
returns table (tenant_id uuid, time_zone text, status text)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.time_zone, t.status from tenants t
    where t.status <> 'closed' or exists (
        select 1 from usage_ledger l left join usage_sent s using (tenant_id, key)
        where l.tenant_id = t.tenant_id and s.key is null)
$$;

-- Tenants with ledger rows not yet accepted by Stripe, and a Stripe customer to send them to.
create function sb_billing_unsent_tenants(p_limit int)
returns table (tenant_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
    select distinct l.tenant_id from usage_ledger l
    join billing_accounts a on a.tenant_id = l.tenant_id and a.stripe_customer_id is not null
    left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
    where s.key is null
    limit p_limit
$$;

-- Which tenant a Stripe customer belongs to (webhooks name the customer only).
create function sb_billing_tenant_of_customer(p_customer text)
returns uuid
language sql stable security definer set search_path = public, pg_temp as $$
    select a.tenant_id from billing_accounts a where a.stripe_customer_id = p_customer
$$;

-- Tenants whose account needs the worker: no customer or subscription yet, a plan change not
-- yet applied, or past due for longer than the grace period.
create function sb_billing_accounts_due(p_grace interval)
returns table (tenant_id uuid, reason text)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, 'setup' from tenants t
    left join billing_accounts a on a.tenant_id = t.tenant_id
    where t.status <> 'closed'
      and (a.tenant_id is null or a.stripe_customer_id is null
           or (a.stripe_subscription_id is null and a.cancelled_at is null))
    union all
    select a.tenant_id, 'plan' from billing_accounts a join tenants t using (tenant_id)
    where a.stripe_subscription_id is not null and a.cancelled_at is null
      and a.stripe_plan is distinct from t.plan
    union all
    select a.tenant_id, 'suspend' from billing_accounts a join tenants t using (tenant_id)
    where t.status = 'past_due' and a.past_due_since is not null
      and a.past_due_since <= now() - p_grace
$$;

revoke execute on function sb_billing_tenants(), sb_billing_unsent_tenants(int),
    sb_billing_tenant_of_customer(text), sb_billing_accounts_due(interval) from public;
grant execute on function sb_billing_tenants(), sb_billing_unsent_tenants(int),
    sb_billing_tenant_of_customer(text), sb_billing_accounts_due(interval) to switchboard_app;

set local role switchboard_owner;

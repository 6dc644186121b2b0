-- Wrap-up: what an agent noted about a call they handled — a disposition code from the
-- softphone's form and free notes. One row per call and agent (a call transferred between
-- agents may have two); a later submission by the same agent replaces their earlier one.
create table call_wrapups (
    tenant_id  uuid not null references tenants (tenant_id),
    call_id    uuid not null,
    agent_id   uuid not null,
    code       text check (code ~ '^[a-z][a-z0-9_]{0,31}$'),
    notes      text not null default '' check (length(notes) <= 2000),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, call_id, agent_id)
);

alter table call_wrapups enable row level security;
alter table call_wrapups force row level security;
create policy tenant_isolation on call_wrapups
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert, update on call_wrapups to switchboard_app;

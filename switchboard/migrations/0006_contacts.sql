-- Contacts: who calls a tenant. The IVR looks a caller up by phone (VIP → priority, blocked →
-- reject branch); the agent's screen pop shows the name and attributes.
create table contacts (
    tenant_id   uuid not null references tenants (tenant_id),
    id          uuid not null,
    phone       text not null check (phone ~ '^\+[1-9][0-9]{6,14}$'),
    name        text not null default '' check (length(name) <= 200),
    vip         boolean not null default false,
    blocked     boolean not null default false,
    attributes  jsonb not null default '{}' check (jsonb_typeof(attributes) = 'object'),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, id),
    -- One contact per phone in a tenant; also the IVR's lookup index.
    unique (tenant_id, phone)
);
create index contacts_vip on contacts (tenant_id, id) where vip;
create index contacts_blocked on contacts (tenant_id, id) where blocked;

alter table contacts enable row level security;
alter table contacts force row level security;
create policy tenant_isolation on contacts
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert, update, delete on contacts to switchboard_app;

-- Per-tenant data keys for secrets at rest, each sealed (AES-256-GCM) under the master key.
create table tenant_keys (
    tenant_id  uuid not null references tenants (tenant_id),
    version    int not null default 1,
    wrapped    bytea not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, version)
);
alter table tenant_keys enable row level security;
alter table tenant_keys force row level security;
create policy tenant_isolation on tenant_keys
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert on tenant_keys to switchboard_app;

-- IVR flows: an editable draft and immutable published versions; numbers route to a flow.
create table flows (
    tenant_id         uuid not null references tenants (tenant_id),
    id                uuid not null,
    name              text not null check (length(name) between 1 and 200),
    draft             jsonb not null,
    draft_updated_at  timestamptz not null default now(),
    published_version int,
    created_at        timestamptz not null default now(),
    primary key (tenant_id, id)
);
create unique index flows_name on flows (tenant_id, lower(name));

create table flow_versions (
    tenant_id    uuid not null,
    flow_id      uuid not null,
    version      int not null check (version >= 1),
    document     jsonb not null,
    published_at timestamptz not null default now(),
    published_by uuid,
    primary key (tenant_id, flow_id, version),
    foreign key (tenant_id, flow_id) references flows (tenant_id, id) on delete cascade
);

alter table numbers add constraint numbers_flow_fkey
    foreign key (tenant_id, flow_id) references flows (tenant_id, id);
create index numbers_by_flow on numbers (tenant_id, flow_id) where flow_id is not null;

do $$
declare t text;
begin
    foreach t in array array['flows', 'flow_versions']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
    end loop;
end $$;
grant select, insert, update, delete on flows to switchboard_app;
-- Published versions are immutable: the app may add them, never change them.
grant select, insert, delete on flow_versions to switchboard_app;

-- Plans and their limits; the platform number inventory and tenants' numbers; seats.

create table plans (
    name                 text primary key,
    max_numbers          int not null check (max_numbers >= 0),
    max_seats            int not null check (max_seats >= 0),
    max_queues           int not null check (max_queues >= 0),
    max_concurrent_calls int not null check (max_concurrent_calls >= 0)
);
insert into plans values
    ('trial', 2, 5, 3, 2),
    ('starter', 10, 25, 10, 20),
    ('growth', 100, 250, 50, 200),
    ('enterprise', 10000, 10000, 1000, 5000);
grant select on plans to switchboard_app;
alter table tenants add constraint tenants_plan_fkey foreign key (plan) references plans (name);

-- Platform inventory: numbers the operator loaded, bound to a platform trunk. Not tenant-owned:
-- which tenant holds a number is recorded in `numbers` below, under RLS.
create table number_inventory (
    e164            text primary key check (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    country         char(2) not null,
    area_code       text not null default '',
    capabilities    text[] not null default '{voice}',
    trunk           text not null,
    status          text not null default 'available'
                    check (status in ('available', 'assigned', 'quarantined')),
    available_after timestamptz,
    imported_at     timestamptz not null default now()
);
create index number_inventory_search on number_inventory (country, area_code, e164)
    where status <> 'assigned';
grant select, insert, update on number_inventory to switchboard_app;

create table numbers (
    tenant_id    uuid not null references tenants (tenant_id),
    id           uuid not null,
    e164         text not null,
    provider     text not null,
    country      char(2) not null,
    capabilities text[] not null,
    flow_id      uuid,
    label        text not null default '',
    purchased_at timestamptz not null default now(),
    released_at  timestamptz,
    primary key (tenant_id, id)
);
-- A number belongs to at most one tenant at a time, whatever RLS shows each of them.
create unique index numbers_active_e164 on numbers (e164) where released_at is null;

create table seats (
    tenant_id   uuid not null references tenants (tenant_id),
    id          uuid not null,
    label       text not null default '',
    user_id     uuid,
    created_at  timestamptz not null default now(),
    assigned_at timestamptz,
    released_at timestamptz,
    primary key (tenant_id, id),
    foreign key (tenant_id, user_id) references users (tenant_id, id)
);
create unique index seats_one_per_user on seats (tenant_id, user_id)
    where user_id is not null and released_at is null;

do $$
declare t text;
begin
    foreach t in array array['numbers', 'seats']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        execute format('grant select, insert, update, delete on %I to switchboard_app', t);
    end loop;
end $$;

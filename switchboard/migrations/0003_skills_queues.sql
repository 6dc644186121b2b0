-- Skills, agents' skill levels, queues and their members.
-- A queue's required skills and overflow policy are jsonb: the API's shapes, stored as sent.
-- The overflow target is also a generated column so a foreign key keeps it inside the tenant.

create table skills (
    tenant_id  uuid not null references tenants (tenant_id),
    id         uuid not null,
    name       text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, id)
);
create unique index skills_name on skills (tenant_id, lower(name));

create table agent_skills (
    tenant_id uuid not null,
    user_id   uuid not null,
    skill_id  uuid not null,
    level     int not null check (level between 1 and 10),
    primary key (tenant_id, user_id, skill_id),
    foreign key (tenant_id, user_id) references users (tenant_id, id),
    foreign key (tenant_id, skill_id) references skills (tenant_id, id)
);
create index agent_skills_by_skill on agent_skills (tenant_id, skill_id);

create table queues (
    tenant_id             uuid not null references tenants (tenant_id),
    id                    uuid not null,
    name                  text not null check (length(name) between 1 and 100),
    strategy              text not null check (strategy in
                            ('longest_idle', 'round_robin', 'fewest_calls', 'skills_based',
                             'ring_all')),
    required_skills       jsonb not null default '[]'
                          check (jsonb_typeof(required_skills) = 'array'),
    priority              int not null default 5 check (priority between 0 and 10),
    service_level_seconds int not null default 20
                          check (service_level_seconds between 1 and 3600),
    max_wait_seconds      int not null default 600 check (max_wait_seconds between 10 and 86400),
    overflow              jsonb not null default '{"action": "hangup", "message": ""}'
                          check (jsonb_typeof(overflow) = 'object' and overflow ? 'action'),
    overflow_queue_id     uuid generated always as ((overflow ->> 'queue_id')::uuid) stored,
    wrap_up_seconds       int not null default 30 check (wrap_up_seconds between 0 and 600),
    announce_position     boolean not null default false,
    announce_ewt          boolean not null default false,
    record                boolean not null default false,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    primary key (tenant_id, id),
    foreign key (tenant_id, overflow_queue_id) references queues (tenant_id, id),
    check (overflow_queue_id is distinct from id),
    check (strategy <> 'skills_based' or jsonb_array_length(required_skills) > 0)
);
create unique index queues_name on queues (tenant_id, lower(name));
create index queues_by_overflow on queues (tenant_id, overflow_queue_id)
    where overflow_queue_id is not null;
-- "Which queues require skill X" when a skill is deleted.
create index queues_required_skills on queues using gin (required_skills jsonb_path_ops);

create table queue_members (
    tenant_id uuid not null,
    queue_id  uuid not null,
    user_id   uuid not null,
    priority  int not null check (priority between 1 and 10),
    primary key (tenant_id, queue_id, user_id),
    foreign key (tenant_id, queue_id) references queues (tenant_id, id) on delete cascade,
    foreign key (tenant_id, user_id) references users (tenant_id, id)
);
create index queue_members_by_user on queue_members (tenant_id, user_id);

do $$
declare t text;
begin
    foreach t in array array['skills', 'agent_skills', 'queues', 'queue_members']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        execute format('grant select, insert, update, delete on %I to switchboard_app', t);
    end loop;
end $$;

-- What each flow uses (its draft and its published version): a queue or prompt a flow uses
-- cannot be deleted, by the database's own foreign keys. Queues may play a hold-music prompt.
create table flow_queue_refs (
    tenant_id uuid not null,
    flow_id   uuid not null,
    queue_id  uuid not null,
    primary key (tenant_id, flow_id, queue_id),
    foreign key (tenant_id, flow_id) references flows (tenant_id, id) on delete cascade,
    foreign key (tenant_id, queue_id) references queues (tenant_id, id) on delete restrict
);
create index flow_queue_refs_by_queue on flow_queue_refs (tenant_id, queue_id);

create table flow_prompt_refs (
    tenant_id uuid not null,
    flow_id   uuid not null,
    prompt_id uuid not null,
    primary key (tenant_id, flow_id, prompt_id),
    foreign key (tenant_id, flow_id) references flows (tenant_id, id) on delete cascade,
    foreign key (tenant_id, prompt_id) references prompts (tenant_id, id) on delete restrict
);
create index flow_prompt_refs_by_prompt on flow_prompt_refs (tenant_id, prompt_id);

alter table queues add column hold_music_prompt_id uuid;
alter table queues add constraint queues_hold_music_fkey
    foreign key (tenant_id, hold_music_prompt_id) references prompts (tenant_id, id)
    on delete restrict;

do $$
declare t text;
begin
    foreach t in array array['flow_queue_refs', 'flow_prompt_refs']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        execute format('grant select, insert, delete on %I to switchboard_app', t);
    end loop;
end $$;

-- Voicemail: messages callers leave in a mailbox or for a queue's agents. The audio stays where
-- the media node recorded it, encrypted with the tenant's recording key (`path`); the row says
-- whose it is and whether someone listened. `queue_id` is not a foreign key: a message outlives
-- the queue it was left for, like a call record does.
create table voicemails (
    tenant_id    uuid not null references tenants (tenant_id),
    voicemail_id uuid not null,
    call_id      uuid not null,
    mailbox      text check (length(mailbox) between 1 and 64),
    queue_id     uuid,
    from_number  text not null check (length(from_number) between 1 and 64),
    path         text not null check (length(path) between 1 and 4096),
    duration_ms  int not null check (duration_ms between 0 and 86400000),
    recorded_at  timestamptz not null,
    listened_at  timestamptz,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, voicemail_id),
    check (mailbox is not null or queue_id is not null)
);
create index voicemails_by_mailbox on voicemails (tenant_id, mailbox, voicemail_id)
    where mailbox is not null;
create index voicemails_by_queue on voicemails (tenant_id, queue_id, voicemail_id)
    where queue_id is not null;

alter table voicemails enable row level security;
alter table voicemails force row level security;
create policy tenant_isolation on voicemails
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert, update, delete on voicemails to switchboard_app;

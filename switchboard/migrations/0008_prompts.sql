-- Prompts: audio the IVR plays, uploaded (WAV, MP3) or spoken from text. `audio` is what a call
-- plays, signed 16-bit little-endian mono PCM at 8 kHz (16 bytes a millisecond), at most ten
-- minutes. Flows refer to prompts by id, in their JSON documents.

create table prompts (
    tenant_id   uuid not null references tenants (tenant_id),
    id          uuid not null,
    name        text not null check (length(name) between 1 and 200),
    source      text not null check (source in ('upload', 'tts')),
    tts_text    text check (length(tts_text) between 1 and 5000),
    tts_voice   text check (length(tts_voice) between 1 and 64),
    duration_ms int not null check (duration_ms between 1 and 600000),
    audio       bytea not null,
    size_bytes  int not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (tenant_id, id),
    check (size_bytes = length(audio) and size_bytes % 2 = 0),
    check ((source = 'tts') = (tts_text is not null and tts_voice is not null)),
    check (source = 'tts' or (tts_text is null and tts_voice is null))
);
create unique index prompts_name on prompts (tenant_id, lower(name));
-- PCM barely compresses: store it out of line without trying.
alter table prompts alter column audio set storage external;

alter table prompts enable row level security;
alter table prompts force row level security;
create policy tenant_isolation on prompts
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert, update, delete on prompts to switchboard_app;

-- Foundation: tenants, users, credentials, audit, idempotency, outbox, mail outbox, signing keys.
-- Runs as switchboard_owner. Every tenant-owned table: tenant_id first in its key, RLS ENABLE +
-- FORCE with the one policy below. The app role gets DML only; it owns nothing.

create table tenants (
    tenant_id   uuid primary key,
    name        text not null check (length(name) between 1 and 200),
    status      text not null check (status in
                  ('pending_verification', 'active', 'past_due', 'suspended', 'closed')),
    plan        text not null default 'trial',
    created_at  timestamptz not null default now(),
    verified_at timestamptz,
    updated_at  timestamptz not null default now()
);

create table users (
    tenant_id         uuid not null references tenants (tenant_id),
    id                uuid not null,
    email             text not null,
    name              text not null default '',
    role              text not null check (role in
                        ('owner', 'admin', 'supervisor', 'agent', 'finance', 'developer')),
    status            text not null check (status in ('invited', 'active', 'disabled')),
    password_hash     text,
    email_verified_at timestamptz,
    created_at        timestamptz not null default now(),
    last_login_at     timestamptz,
    primary key (tenant_id, id)
);
-- One login per email address across the platform: sign-in needs no tenant to be named.
create unique index users_email_key on users (lower(email));

create table email_tokens (
    tenant_id  uuid not null references tenants (tenant_id),
    id         uuid not null,
    user_id    uuid not null,
    purpose    text not null check (purpose in ('verify_email', 'invitation', 'password_reset')),
    token_hash bytea not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz,
    primary key (tenant_id, id),
    foreign key (tenant_id, user_id) references users (tenant_id, id)
);

create table refresh_tokens (
    tenant_id   uuid not null references tenants (tenant_id),
    id          uuid not null,
    user_id     uuid not null,
    family_id   uuid not null,
    token_hash  bytea not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    primary key (tenant_id, id),
    foreign key (tenant_id, user_id) references users (tenant_id, id)
);
create index refresh_tokens_family on refresh_tokens (tenant_id, family_id);

create table api_keys (
    tenant_id    uuid not null references tenants (tenant_id),
    id           uuid not null,
    name         text not null,
    secret_hash  bytea not null,
    scopes       text[] not null,
    created_by   uuid not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    primary key (tenant_id, id)
);

create table oauth_clients (
    tenant_id    uuid not null references tenants (tenant_id),
    id           uuid not null,
    name         text not null,
    secret_hash  bytea not null,
    scopes       text[] not null,
    created_by   uuid not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    primary key (tenant_id, id)
);

create table audit_log (
    tenant_id   uuid not null references tenants (tenant_id),
    id          uuid not null,
    at          timestamptz not null default now(),
    actor_type  text not null,
    actor_id    uuid,
    action      text not null,
    target_type text,
    target_id   text,
    source_ip   inet,
    details     jsonb not null default '{}'::jsonb,
    primary key (tenant_id, id)
);

create table idempotency_keys (
    tenant_id   uuid not null references tenants (tenant_id),
    key         text not null,
    method      text not null,
    path        text not null,
    fingerprint bytea not null,
    status_code int,
    response    bytea,
    created_at  timestamptz not null default now(),
    primary key (tenant_id, key)
);
create index idempotency_keys_age on idempotency_keys (created_at);

create table outbox (
    tenant_id    uuid not null,
    id           bigint generated always as identity,
    event_id     uuid not null,
    subject      text not null,
    payload      bytea not null,
    created_at   timestamptz not null default now(),
    published_at timestamptz,
    primary key (tenant_id, id)
);
create index outbox_pending on outbox (id) where published_at is null;

create table mail_outbox (
    tenant_id       uuid not null,
    id              uuid not null,
    to_address      text not null,
    subject         text not null,
    body_text       text not null,
    created_at      timestamptz not null default now(),
    attempts        int not null default 0,
    next_attempt_at timestamptz not null default now(),
    sent_at         timestamptz,
    last_error      text,
    primary key (tenant_id, id)
);
create index mail_outbox_pending on mail_outbox (next_attempt_at) where sent_at is null;

-- Platform-wide: the keys that sign access tokens. Private halves are sealed with the master key
-- when one is configured.
create table signing_keys (
    kid          text primary key,
    private_jwk  bytea not null,
    sealed       boolean not null,
    created_at   timestamptz not null default now(),
    retired_at   timestamptz
);

do $$
declare t text;
begin
    foreach t in array array['tenants', 'users', 'email_tokens', 'refresh_tokens', 'api_keys',
                             'oauth_clients', 'audit_log', 'idempotency_keys', 'outbox',
                             'mail_outbox']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        execute format('grant select, insert, update, delete on %I to switchboard_app', t);
    end loop;
end $$;

grant select, insert, update on signing_keys to switchboard_app;

-- Cross-tenant resolution, kept to a few narrow functions owned by the BYPASSRLS resolver role.
grant usage, create on schema public to switchboard_resolver;
grant select on users, tenants to switchboard_resolver;
grant select, update, delete on outbox, mail_outbox to switchboard_resolver;
grant delete on idempotency_keys to switchboard_resolver;

set local role switchboard_resolver;

create function sb_find_login(p_email text)
returns table (tenant_id uuid, user_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
    select u.tenant_id, u.id from users u where lower(u.email) = lower(p_email)
$$;

create function sb_outbox_claim(p_limit int)
returns table (id bigint, tenant_id uuid, event_id uuid, subject text, payload bytea)
language sql volatile security definer set search_path = public, pg_temp as $$
    select o.id, o.tenant_id, o.event_id, o.subject, o.payload
    from outbox o where o.published_at is null
    order by o.id limit p_limit
    for update skip locked
$$;

create function sb_outbox_mark_published(p_ids bigint[])
returns void
language sql volatile security definer set search_path = public, pg_temp as $$
    update outbox set published_at = now() where id = any(p_ids) and published_at is null
$$;

create function sb_outbox_purge(p_older_than interval)
returns bigint
language sql volatile security definer set search_path = public, pg_temp as $$
    with gone as (
        delete from outbox where published_at is not null and published_at < now() - p_older_than
        returning 1
    ) select count(*) from gone
$$;

create function sb_mail_claim(p_limit int)
returns table (tenant_id uuid, id uuid, to_address text, subject text, body_text text,
               attempts int)
language sql volatile security definer set search_path = public, pg_temp as $$
    select m.tenant_id, m.id, m.to_address, m.subject, m.body_text, m.attempts
    from mail_outbox m where m.sent_at is null and m.next_attempt_at <= now()
    order by m.next_attempt_at limit p_limit
    for update skip locked
$$;

create function sb_mail_mark(p_tenant uuid, p_id uuid, p_error text, p_retry_after interval)
returns void
language sql volatile security definer set search_path = public, pg_temp as $$
    update mail_outbox set
        attempts = attempts + 1,
        sent_at = case when p_error is null then now() end,
        last_error = p_error,
        next_attempt_at = now() + coalesce(p_retry_after, interval '0')
    where tenant_id = p_tenant and id = p_id
$$;

create function sb_idempotency_purge(p_older_than interval)
returns bigint
language sql volatile security definer set search_path = public, pg_temp as $$
    with gone as (
        delete from idempotency_keys where created_at < now() - p_older_than returning 1
    ) select count(*) from gone
$$;

revoke execute on function sb_find_login(text), sb_outbox_claim(int),
    sb_outbox_mark_published(bigint[]), sb_outbox_purge(interval), sb_mail_claim(int),
    sb_mail_mark(uuid, uuid, text, interval), sb_idempotency_purge(interval) from public;
grant execute on function sb_find_login(text), sb_outbox_claim(int),
    sb_outbox_mark_published(bigint[]), sb_outbox_purge(interval), sb_mail_claim(int),
    sb_mail_mark(uuid, uuid, text, interval), sb_idempotency_purge(interval) to switchboard_app;

set local role switchboard_owner;

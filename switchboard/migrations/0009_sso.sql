-- Single sign-on: at most one OpenID Connect identity provider per tenant, and the sign-ins in
-- flight to it. The client secret and each PKCE verifier are sealed in the tenant's vault; a
-- pending sign-in is found by the SHA-256 of its state's random part and of nothing else.

create table sso_configs (
    tenant_id              uuid primary key references tenants (tenant_id),
    issuer                 text not null check (length(issuer) between 1 and 500),
    client_id              text not null check (length(client_id) between 1 and 255),
    client_secret          bytea not null,  -- tenant vault, purpose 'sso.client_secret'
    allowed_email_domains  text[] not null
                           check (cardinality(allowed_email_domains) between 1 and 50),
    -- Never 'owner': an identity provider must not mint owners.
    default_role           text not null default 'agent'
                           check (default_role in
                             ('admin', 'supervisor', 'agent', 'finance', 'developer')),
    password_login         boolean not null default true,
    -- From the provider's discovery document, checked when the tenant configured it.
    authorization_endpoint text not null,
    token_endpoint         text not null,
    jwks_uri               text not null,
    signing_algs           text[] not null check (cardinality(signing_algs) >= 1),
    token_auth_method      text not null
                           check (token_auth_method in
                             ('client_secret_basic', 'client_secret_post')),
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);

create table sso_logins (
    tenant_id     uuid not null references sso_configs (tenant_id) on delete cascade,
    state_hash    bytea not null,
    nonce_hash    bytea not null,
    code_verifier bytea not null,  -- tenant vault, purpose 'sso.code_verifier'
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    used_at       timestamptz,
    primary key (tenant_id, state_hash)
);
create index sso_logins_expiry on sso_logins (tenant_id, expires_at);

do $$
declare t text;
begin
    foreach t in array array['sso_configs', 'sso_logins']
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format($p$create policy tenant_isolation on %I
            using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
            with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        execute format('grant select, insert, update, delete on %I to switchboard_app', t);
    end loop;
end $$;

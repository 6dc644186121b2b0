-- SIP trunks. Platform trunks are the operator's carriers (number_inventory.trunk names one, as
-- text: imports may precede the trunk). Tenant trunks are a tenant's own carrier (BYOC).
-- Passwords are stored sealed (AES-256-GCM), never in plain text.

create table platform_trunks (
    name             text primary key check (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    host             text not null check (length(host) between 1 and 253),
    port             int not null default 5060 check (port between 1 and 65535),
    transport        text not null default 'udp' check (transport in ('udp', 'tcp', 'tls')),
    allowed_sources  cidr[] not null default '{}',
    username         text,
    password_sealed  bytea,  -- sealed under the master key, aad 'platform-trunk:<name>'
    codecs           text[] not null default '{PCMU,PCMA}'
                     check (cardinality(codecs) >= 1 and codecs <@ array['PCMU', 'PCMA']),
    max_channels     int not null default 100 check (max_channels >= 1),
    register         boolean not null default false,
    register_expires int not null default 3600 check (register_expires between 60 and 3600),
    created_at       timestamptz not null default now(),
    check ((username is null) = (password_sealed is null)),
    check (not register or username is not null)
);
-- Operator-managed: the CLI (as the app role) adds and lists; nothing in the API changes them.
grant select, insert on platform_trunks to switchboard_app;

create table trunks (
    tenant_id          uuid not null references tenants (tenant_id),
    id                 uuid not null,
    name               text not null check (length(name) between 1 and 100),
    host               text not null check (length(host) between 1 and 253),
    port               int not null check (port between 1 and 65535),
    transport          text not null check (transport in ('udp', 'tcp', 'tls')),
    allowed_sources    cidr[] not null default '{}'
                       check (cardinality(allowed_sources) <= 50),
    inbound_username   text,
    inbound_password   bytea,  -- tenant vault, purpose 'trunk.inbound_password'
    outbound_username  text,
    outbound_password  bytea,  -- tenant vault, purpose 'trunk.outbound_password'
    from_domain        text,
    codecs             text[] not null
                       check (cardinality(codecs) >= 1 and codecs <@ array['PCMU', 'PCMA']),
    max_channels       int not null check (max_channels between 1 and 1000),
    caller_id_policy   text not null default 'tenant_numbers_only'
                       check (caller_id_policy in ('tenant_numbers_only', 'passthrough')),
    register           boolean not null default false,
    register_expires   int not null default 3600 check (register_expires between 60 and 3600),
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    primary key (tenant_id, id),
    check ((inbound_username is null) = (inbound_password is null)),
    check ((outbound_username is null) = (outbound_password is null)),
    check (cardinality(allowed_sources) > 0 or inbound_username is not null),
    check (not register or outbound_username is not null)
);
create unique index trunks_name on trunks (tenant_id, lower(name));

alter table trunks enable row level security;
alter table trunks force row level security;
create policy tenant_isolation on trunks
    using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select, insert, update, delete on trunks to switchboard_app;

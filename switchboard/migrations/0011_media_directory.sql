-- What a media node needs before it knows the tenant: which trunks may send calls (by source
-- network or digest user), and which tenant a dialed number belongs to. Narrow functions owned
-- by the resolver role; everything else the node reads inside the tenant's own transaction.
grant select on numbers, number_inventory, plans, trunks, platform_trunks to switchboard_resolver;

set local role switchboard_resolver;

create function sb_media_number(p_e164 text)
returns table (tenant_id uuid, number_id uuid, flow_id uuid, tenant_status text,
               max_concurrent_calls int, platform_trunk text)
language sql stable security definer set search_path = public, pg_temp as $$
    select n.tenant_id, n.id, n.flow_id, t.status, p.max_concurrent_calls, i.trunk
    from numbers n
    join tenants t on t.tenant_id = n.tenant_id
    join plans p on p.name = t.plan
    left join number_inventory i on i.e164 = n.e164
    where n.e164 = p_e164 and n.released_at is null
$$;

-- Every trunk's inbound recognisers and where it is (for keepalive pings and registration).
-- Passwords stay sealed: the node unseals a tenant trunk's inside that tenant's transaction,
-- and a platform trunk's under the master key.
create function sb_media_trunks()
returns table (tenant_id uuid, trunk_id uuid, platform_trunk text, allowed_sources cidr[],
               digest_username text, host text, port int, transport text, register boolean,
               register_expires int)
language sql stable security definer set search_path = public, pg_temp as $$
    select t.tenant_id, t.id, null::text, t.allowed_sources, t.inbound_username, t.host, t.port,
           t.transport, t.register, t.register_expires
    from trunks t
    union all
    select null::uuid, null::uuid, p.name, p.allowed_sources, null::text, p.host, p.port,
           p.transport, p.register, p.register_expires
    from platform_trunks p
$$;

revoke execute on function sb_media_number(text), sb_media_trunks() from public;
grant execute on function sb_media_number(text), sb_media_trunks() to switchboard_app;

set local role switchboard_owner;

"""Settings from SWITCHBOARD_* environment variables and an optional TOML file, checked at start."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "SWITCHBOARD_"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it as the operator would type it."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # PostgreSQL. The app role owns nothing and cannot bypass RLS; the admin URL is used only by
    # `switchboard migrate` (and by `dev`) to create roles and apply migrations.
    database_url: str | None = None
    admin_database_url: str | None = None
    db_pool_min: int = 2
    db_pool_max: int = 20
    app_db_password: str | None = None

    nats_url: str | None = None
    events_stream_replicas: int = 1

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str | None = None
    max_body_bytes: int = 1_048_576
    trusted_proxies: list[str] = []

    # Rate limits: sustained requests per second and burst, per client IP and per tenant.
    ip_rate: float = 20.0
    ip_burst: int = 100
    tenant_rate: float = 200.0
    tenant_burst: int = 1000

    jwt_issuer: str = "switchboard"
    jwt_audience: str = "switchboard-api"
    access_token_seconds: int = 900
    refresh_token_seconds: int = 30 * 24 * 3600
    verification_token_seconds: int = 48 * 3600
    invitation_token_seconds: int = 7 * 24 * 3600
    password_reset_seconds: int = 3600
    master_key: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    mail_from: str = "Switchboard <no-reply@switchboard.localhost>"

    otlp_endpoint: str | None = None
    service_name: str = "switchboard"
    log_level: str = "INFO"
    log_format: str = "json"

    # Media node: SIP on one port for UDP and TCP (TLS on sip_tls_port with a cert and key),
    # RTP on even ports in [rtp_port_min, rtp_port_max].
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    sip_transports: list[str] = msgspec.field(default_factory=lambda: ["udp", "tcp"])
    sip_tls_port: int = 5061
    sip_tls_cert: str | None = None
    sip_tls_key: str | None = None
    sip_public_host: str | None = None
    sip_realm: str = "switchboard"
    sip_digest_algorithm: str = "SHA-256"
    sip_source_rate: float = 50.0
    sip_source_burst: int = 100
    rtp_host: str = "127.0.0.1"
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    agent_device_networks: list[str] = []
    """CIDRs where agents' SIP phones may be rung (`sip:` devices); none by default."""
    media_enabled: bool = True
    """Whether `switchboard dev` runs a media node too."""

    # Browser agents (WebRTC): STUN/TURN servers handed to softphones, TURN credentials minted
    # per agent with coturn's shared-secret scheme (use-auth-secret), valid turn_ttl_seconds.
    stun_urls: list[str] = []
    turn_urls: list[str] = []
    turn_secret: str | None = None
    turn_ttl_seconds: int = 43200
    agent_reconnect_grace_seconds: float = 60.0
    """How long a caller hears hold music while the agent's browser reconnects mid-call."""

    # ACD router: tenants hash onto router_partitions partitions (the same number everywhere);
    # each router instance holds leases (renewed every third of router_lease_seconds) on its
    # share of them.
    router_partitions: int = 4
    router_lease_seconds: float = 6.0
    router_offer_timeout_seconds: float = 20.0
    router_enabled: bool = True
    """Whether `switchboard dev` runs a router too."""
    router_namespace: str = ""
    """Keeps router fleets that share one NATS apart (their leases, consumers, state, subjects):
    letters, digits, '_' and '-'."""

    # Billing. With no stripe_api_key, `switchboard dev` runs the Stripe emulator in-process
    # and points the SDK at it; production sets the key (and leaves stripe_api_base unset).
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    """Where the Stripe SDK sends requests (the emulator's address in tests and dev)."""
    stripe_webhook_secret: str | None = None
    """The endpoint's signing secret (whsec_...) that Stripe-Signature headers are checked with."""
    stripe_webhook_tolerance_seconds: int = 300
    stripe_timeout_seconds: float = 15.0
    """How long one Stripe request may take before it is given up (and retried)."""
    billing_enabled: bool = True
    """Whether workers meter usage and sync with Stripe (needs stripe_api_key)."""
    billing_grace_hours: float = 72.0
    """How long a tenant stays past_due after a failed payment before it is suspended."""
    billing_sync_interval_seconds: float = 5.0
    """How often the worker sends unsent ledger rows and sweeps seat-days and number-months."""
    billing_meter_batch: int = 100

    data_dir: str = ".switchboard"
    node_id: str = "node-1"
    test_mode: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("http_port", 0 <= self.http_port <= 65535, "must be a TCP port (0-65535)"),
            ("smtp_port", 0 < self.smtp_port <= 65535, "must be a TCP port (1-65535)"),
            ("db_pool_min", self.db_pool_min >= 0, "must be >= 0"),
            ("db_pool_max", self.db_pool_max >= max(1, self.db_pool_min), "must be >= db_pool_min"),
            ("max_body_bytes", self.max_body_bytes >= 1024, "must be at least 1024"),
            ("access_token_seconds", 30 <= self.access_token_seconds <= 86400, "30..86400"),
            ("refresh_token_seconds", self.refresh_token_seconds >= 60, "must be >= 60"),
            ("ip_rate", self.ip_rate > 0, "must be > 0"),
            ("tenant_rate", self.tenant_rate > 0, "must be > 0"),
            ("ip_burst", self.ip_burst >= 1, "must be >= 1"),
            ("tenant_burst", self.tenant_burst >= 1, "must be >= 1"),
            ("events_stream_replicas", self.events_stream_replicas in (1, 3, 5), "1, 3 or 5"),
            ("sip_port", 0 <= self.sip_port <= 65535, "must be a UDP/TCP port (0-65535)"),
            ("router_partitions", 1 <= self.router_partitions <= 1024, "must be 1..1024"),
            (
                "router_namespace",
                re.fullmatch(r"[A-Za-z0-9_-]{0,32}", self.router_namespace) is not None,
                "up to 32 letters, digits, '_' or '-'",
            ),
            ("router_lease_seconds", 1.0 <= self.router_lease_seconds <= 300, "1..300"),
            (
                "router_offer_timeout_seconds",
                5.0 <= self.router_offer_timeout_seconds <= 120,
                "5..120",
            ),
            ("sip_tls_port", 0 <= self.sip_tls_port <= 65535, "must be a TCP port (0-65535)"),
            (
                "sip_transports",
                bool(self.sip_transports) and set(self.sip_transports) <= {"udp", "tcp", "tls"},
                "a non-empty list of udp, tcp, tls",
            ),
            (
                "sip_tls_cert",
                "tls" not in self.sip_transports
                or (self.sip_tls_cert is not None and self.sip_tls_key is not None),
                "TLS needs sip_tls_cert and sip_tls_key",
            ),
            (
                "rtp_port_min",
                1024 <= self.rtp_port_min < self.rtp_port_max <= 65535
                and self.rtp_port_max - self.rtp_port_min >= 3,
                "rtp_port_min < rtp_port_max, both in 1024-65535, at least 4 ports apart",
            ),
            ("sip_source_rate", self.sip_source_rate > 0, "must be > 0"),
            (
                "sip_digest_algorithm",
                self.sip_digest_algorithm in ("SHA-256", "MD5"),
                "SHA-256 or MD5",
            ),
            (
                "agent_device_networks",
                all(_is_network(n) for n in self.agent_device_networks),
                "a list of networks in CIDR notation, e.g. 10.20.0.0/16",
            ),
            (
                "stun_urls",
                all(u.startswith(("stun:", "stuns:")) for u in self.stun_urls),
                "a list of stun: or stuns: URLs",
            ),
            (
                "turn_urls",
                all(u.startswith(("turn:", "turns:")) for u in self.turn_urls),
                "a list of turn: or turns: URLs",
            ),
            (
                "turn_secret",
                not self.turn_urls or bool(self.turn_secret),
                "TURN servers need the shared secret (turn_secret)",
            ),
            ("turn_ttl_seconds", 60 <= self.turn_ttl_seconds <= 7 * 86400, "60..604800"),
            (
                "agent_reconnect_grace_seconds",
                1.0 <= self.agent_reconnect_grace_seconds <= 600,
                "1..600",
            ),
            (
                "stripe_webhook_tolerance_seconds",
                10 <= self.stripe_webhook_tolerance_seconds <= 3600,
                "10..3600",
            ),
            ("stripe_timeout_seconds", 0.1 <= self.stripe_timeout_seconds <= 120, "0.1..120"),
            ("billing_grace_hours", 0 <= self.billing_grace_hours <= 24 * 90, "0..2160"),
            (
                "billing_sync_interval_seconds",
                0.05 <= self.billing_sync_interval_seconds <= 3600,
                "0.05..3600",
            ),
            ("billing_meter_batch", 1 <= self.billing_meter_batch <= 1000, "1..1000"),
            (
                "stripe_api_base",
                self.stripe_api_base is None
                or self.stripe_api_base.startswith(("http://", "https://")),
                "an http:// or https:// URL",
            ),
            ("log_format", self.log_format in ("json", "text"), "json or text"),
            ("log_level", self.log_level.upper() in _LEVELS, "DEBUG, INFO, WARNING or ERROR"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name}: {why}")
        if self.master_key is not None and len(_b64_or_hex(self.master_key)) != 32:
            raise ValueError("master_key: must be 32 bytes, hex or base64 encoded")

    @property
    def master_key_bytes(self) -> bytes | None:
        return None if self.master_key is None else _b64_or_hex(self.master_key)

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"


_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}
_FIELDS = set(Settings.__struct_fields__)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _b64_or_hex(value: str) -> bytes:
    import base64
    import binascii

    try:
        return bytes.fromhex(value)
    except ValueError:
        pass
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=False)
    except binascii.Error:
        return b""


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _parse_env_value(field: str, raw: str) -> Any:
    if field in (
        "trusted_proxies",
        "sip_transports",
        "agent_device_networks",
        "stun_urls",
        "turn_urls",
    ):
        return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def load_settings(
    env: dict[str, str] | None = None, file: str | Path | None = None, **overrides: Any
) -> Settings:
    """Build settings: TOML file (SWITCHBOARD_CONFIG), then environment, then overrides."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    source: dict[str, str] = {}
    path = file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(
                f"{ENV_PREFIX}CONFIG={path}: cannot read settings file: {exc}"
            ) from exc
        for key, value in data.items():
            if key not in _FIELDS:
                raise SettingsError(f"{path}: unknown setting '{key}'")
            raw[key] = value
            source[key] = f"'{key}' in {path}"
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field not in _FIELDS:
            raise SettingsError(f"{name}: unknown setting (known: see runtime/settings.py)")
        raw[field] = _parse_env_value(field, value)
        source[field] = name
    raw.update(overrides)
    for field in overrides:
        source[field] = field
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        bad = _field_of(message)
        where = (source.get(bad) or _env_name(bad)) if bad else "settings"
        raise SettingsError(f"{where}: {message}") from exc


def _field_of(message: str) -> str | None:
    match = re.search(r"`\$\.(\w+)", message)
    if match:
        return match.group(1)
    head = message.split(":", 1)[0].strip()
    return head if head in _FIELDS else None

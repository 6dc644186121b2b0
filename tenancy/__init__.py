"""Tenants, users, roles, credentials and (later) the provisioning catalog."""

"""SIP trunks: platform trunks the operator runs, and tenants' own carriers (BYOC)."""

"""Single sign-on: one OpenID Connect identity provider per tenant, the authorization code flow
with PKCE, and users created just in time from a validated ID token."""

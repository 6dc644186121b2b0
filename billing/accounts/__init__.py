"""Each tenant's Stripe customer, subscription, plan and standing."""

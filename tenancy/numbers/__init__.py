"""Phone numbers: search the inventory through a NumberProvider, purchase, route, release."""

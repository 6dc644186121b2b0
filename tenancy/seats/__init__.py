"""Seats: the billable unit. Created, assigned to an agent, unassigned, released."""

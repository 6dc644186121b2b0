"""Contacts: who is calling. The IVR looks them up (VIP, blocked) and the screen pop shows them."""

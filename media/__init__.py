"""Media: audio conversion for prompts now; SIP, RTP and the media node later. Imports nothing
from tenancy or api: what it needs about tenants is passed in."""

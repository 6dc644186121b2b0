"""Voicemail: messages callers leave in a mailbox or for a queue, recorded on the media node."""

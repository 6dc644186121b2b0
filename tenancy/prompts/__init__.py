"""Prompts: audio the IVR plays, uploaded or spoken from text, stored as 8 kHz mono PCM."""

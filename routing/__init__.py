"""IVR flows, the ACD router and agent presence."""

"""Trace storage, reports and the viewer: every run recorded, queried and shown."""

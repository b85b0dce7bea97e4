"""Render providers: one interface (base.py), the offline local provider, and the remote APIs."""

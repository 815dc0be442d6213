"""Supervision: systemd notify protocol and the internal stage watchdog."""

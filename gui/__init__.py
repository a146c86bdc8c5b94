"""Vitrine desktop app (Qt). Arrives with the desktop-app issue."""

"""Vitrine's engine: photos in, cameras, clouds and web-ready files out. Never imports Qt."""

__version__ = "0.1.0"

"""Vitrine's engine: photos in, cameras, clouds and web-ready files out. Never imports Qt."""

# zlib must be loaded before pycolmap: pycolmap 4.2.1's wheel carries its own zlib, and when it
# is loaded first, Python's zlib (PNG writing, gzip, zip) corrupts the heap and aborts
# (checked: `import pycolmap, zlib; zlib.compress(...)` aborts; zlib first works).
import zlib  # noqa: F401, E402  (load order, see above)

__version__ = "0.1.0"

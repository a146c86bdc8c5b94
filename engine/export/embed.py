"""``embed.html``: the snippet a storefront owner pastes to show ``mesh.glb`` on a product page.

It uses Google's ``<model-viewer>`` web component (Apache-2.0): orbit and zoom with the mouse or
a finger, a slow turn while idle, and "View in your space" on phones (Android Scene Viewer /
WebXR from the GLB, iOS AR Quick Look from the USDZ when there is one). The component's script
comes from Google's hosted-libraries CDN, pinned to one version so a page never changes under
its owner; this is the one export that fetches something (the 3D files themselves are the
owner's). The page holds no local path: the model files are referenced by bare name, to be
uploaded next to the page or replaced by their storefront URLs.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from engine.export._atomic import atomic_open

#: The pinned <model-viewer> release and its script on Google's CDN (as modelviewer.dev shows).
MODEL_VIEWER_VERSION = "4.0.0"
MODEL_VIEWER_SCRIPT = (
    f"https://ajax.googleapis.com/ajax/libs/model-viewer/{MODEL_VIEWER_VERSION}/model-viewer.min.js"
)


def _file_name(name: str, what: str) -> str:
    # a bare file name or a web address; never a local folder
    if "://" in name:
        return name
    base = Path(name.replace("\\", "/")).name
    if not base:
        raise ValueError(f"{what} must be a file name such as mesh.glb, got {name!r}")
    return base


def embed_snippet(
    glb_name: str = "mesh.glb", *, title: str = "Product", usdz_name: str | None = None
) -> str:
    """The ``<script>`` and ``<model-viewer>`` tags, ready to paste into a page.

    Parameters
    ----------
    glb_name
        File name (or URL) of the GLB.
    title
        Product name, used for the alt text.
    usdz_name
        File name (or URL) of the USDZ for iOS, or None.

    Returns
    -------
    str
        HTML.
    """
    glb = html.escape(_file_name(glb_name, "glb_name"), quote=True)
    alt = html.escape(f"3D model of {title}", quote=True)
    ios = ""
    if usdz_name:
        ios = f'\n  ios-src="{html.escape(_file_name(usdz_name, "usdz_name"), quote=True)}"'
    return (
        f'<script type="module" src="{MODEL_VIEWER_SCRIPT}"></script>\n'
        f'<model-viewer\n  src="{glb}"{ios}\n  alt="{alt}"\n'
        '  ar\n  ar-modes="webxr scene-viewer quick-look"\n  camera-controls\n'
        '  touch-action="pan-y"\n  auto-rotate\n  shadow-intensity="1"\n'
        '  style="width: 100%; height: 480px; background-color: #f4f4f4;">\n'
        "</model-viewer>"
    )


def write_embed_html(
    path: str | os.PathLike[str],
    glb_name: str = "mesh.glb",
    *,
    title: str = "Product",
    usdz_name: str | None = None,
) -> Path:
    """Write a small page showing the model with ``<model-viewer>`` (atomically).

    The page explains, in a comment at its top, which files to upload where; the part between
    the ``BEGIN``/``END`` comments is what goes into a product page.

    Parameters
    ----------
    path
        Output file, usually ``OUT/embed.html``.
    glb_name
        The GLB's file name (or its URL on the storefront).
    title
        Product name (page title and alt text).
    usdz_name
        The USDZ's file name (or URL) for iOS AR Quick Look, or None when there is none.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    snippet = embed_snippet(glb_name, title=title, usdz_name=usdz_name)
    glb = _file_name(glb_name, "glb_name")
    files = glb + (f" and {_file_name(usdz_name, 'usdz_name')}" if usdz_name else "")
    ios_note = (
        ""
        if usdz_name
        else "\n  iPhone and iPad visitors get AR only with a USDZ file: install usd-core\n"
        "  (pip install usd-core) and export again to get mesh.usdz and ios-src."
    )
    comment = (
        "<!--\n"
        "  How to show this 3D model on your shop's product page\n"
        "  -----------------------------------------------------\n"
        f"  1. Upload {files} to your shop's file storage\n"
        "     (Shopify: Content > Files; WooCommerce/WordPress: Media Library; or any web\n"
        "     host). Copy each file's web address.\n"
        f"  2. In the snippet below, replace {files} with those addresses.\n"
        "  3. Paste the lines between BEGIN and END into the product description's HTML\n"
        "     (or a custom-HTML block). Nothing else is needed: the viewer script comes from\n"
        "     Google's CDN.\n"
        "  Opening this file straight from disk shows nothing in most browsers (they refuse\n"
        "  local model files): open it through a web server, or look at it on your shop."
        f"{ios_note}\n"
        "-->\n"
    )
    safe_title = html.escape(title)
    page = (
        "<!DOCTYPE html>\n"
        f"{comment}"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{safe_title}</title>\n"
        '</head>\n<body style="margin: 0; font-family: sans-serif;">\n'
        "<!-- BEGIN 3D model snippet -->\n"
        f"{snippet}\n"
        "<!-- END 3D model snippet -->\n"
        "</body>\n</html>\n"
    )
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(page)
    return Path(path)

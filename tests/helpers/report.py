"""What any HTML report must hold."""

import base64
import io
import re
from pathlib import Path

from PIL import Image

from imat_kit.report import SECTIONS


def check_report(path: Path) -> str:
    """What any report must hold: every section, numbers in every table, every figure a valid
    image, nothing loaded from the network. Returns the page."""
    page = path.read_text(encoding="utf-8")
    for s in SECTIONS:
        assert f'<section id="{s}">' in page, s
    tables = re.findall(r"<table>(.*?)</table>", page, re.S)
    assert len(tables) >= 5
    for t in tables:
        cells = re.findall(r"<td>(.*?)</td>", t, re.S)
        assert any(re.fullmatch(r"-?\d+(\.\d+)?", c.strip()) for c in cells), t[:300]
    images = re.findall(r'<img alt="[^"]*" src="data:image/(png|jpeg);base64,([^"]+)"', page)
    assert len(images) >= 5 and len(images) == page.count("<img ")
    for kind, data in images:
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.format == {"png": "PNG", "jpeg": "JPEG"}[kind]
        im.verify()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|ftp:)""", page, re.I)
    assert "<script" not in page.lower() and "url(" not in page and "@import" not in page
    return page

"""A study report as one self-contained HTML page: inline CSS, every figure embedded as a base64 PNG, UTF-8
declared, and a Content-Security-Policy that forbids any network load, so the page opens the same from a
mail attachment, an MLflow artifact view or a machine with no network.

Plain data in, text out: `study_report.py` gathers the sections, `page` lays them out.
"""
from __future__ import annotations

import base64
import html
import struct
from dataclasses import dataclass, field
from pathlib import Path

# A figure is shown at this share of its pixel size: 150-dpi figures at 112 CSS px per inch, so every figure's
# 8 pt text reads at about 12 px, whatever the figure's size (wider ones are shrunk to the page by max-width).
DISPLAY_SCALE = 0.75
# Nothing but the page itself and data: URIs may load (a stray external reference fails closed).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 24px auto;
       max-width: 1180px; padding: 0 16px; color: #1d232a; line-height: 1.45; }
h1 { font-size: 1.55em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d5dbe1; padding-bottom: 0.2em; }
h3 { font-size: 1.0em; }
.caption { background: #f3f6f9; border-left: 4px solid #4a7bb7; padding: 8px 12px; margin: 12px 0; }
.caption p { margin: 0.2em 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #d5dbe1; padding: 4px 10px; }
th { background: #eef2f6; text-align: center; }
td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.table { overflow-x: auto; }
.table p { margin: 0.15em 0; font-size: 0.85em; color: #4b5560; }
figure { margin: 14px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { font-size: 0.85em; color: #4b5560; }
.note { font-size: 0.9em; color: #6b4d00; background: #fff8e1; padding: 3px 8px; margin: 4px 0; }
footer { margin-top: 2.5em; font-size: 0.8em; color: #6b7580; }
"""


@dataclass
class Section:
    """One part of the report: a heading, a line saying what it shows, its figures (PNG path, caption) and its
    one-line notes (data that is missing, and why)."""

    title: str
    text: str = ""
    figures: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI (the page carries its images)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    return struct.unpack(">II", head[16:24])


def _section(s: Section) -> str:
    esc = html.escape
    out = [f"<section>\n<h2>{esc(s.title)}</h2>"]
    if s.text:
        out.append(f"<p>{esc(s.text)}</p>")
    out += [f'<p class="note">{esc(n)}</p>' for n in s.notes]
    for path, caption in s.figures:
        width = round(DISPLAY_SCALE * png_size(path)[0])
        out.append(f'<figure><img src="{data_uri(path)}" width="{width}" alt="{esc(caption)}">'
                   f"<figcaption>{esc(caption)}</figcaption></figure>")
    out.append("</section>")
    return "\n".join(out)


def page(title: str, caption: list[str], table_html: str, sections: list[Section], footer: str) -> str:
    """The whole page: title, the caption saying what was run, the table (already HTML), the sections."""
    esc = html.escape
    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n")
    body = ['<div class="caption">' + "".join(f"<p>{esc(line)}</p>" for line in caption) + "</div>",
            f'<section class="table">\n{table_html}</section>']
    body += [_section(s) for s in sections]
    body.append(f"<footer>{esc(footer)}</footer>")
    return head + "\n".join(body) + "\n</body>\n</html>\n"


__all__ = ["Section", "page", "data_uri", "png_size", "CSP", "DISPLAY_SCALE"]

"""A small document model (sections of text, tables, images, preformatted text) and its two
renderings: a self-contained HTML page (images embedded as data URIs, so the one file can be mailed)
and Markdown (images by relative path). Everything shown is escaped."""

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

PASS_MARK, FAIL_MARK = "✓", "✗"


@dataclass
class Text:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None


@dataclass
class Image:
    path: str  # relative to the report's directory
    alt: str


@dataclass
class Preformatted:
    text: str


Block = Text | Table | Image | Preformatted


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    collapsed: bool = False  # HTML: folded under its title until clicked (long reference material)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td.pass { color: #17692c; font-weight: 600; }
td.fail { color: #b3261e; }
caption { caption-side: top; text-align: left; color: #555; font-size: 13px; padding-bottom: .3em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 13px; }
p.lead { font-size: 17px; background: #eef6ee; border-left: 4px solid #2e7d32; padding: .6em .9em; }
details > summary { font-size: 1.5em; font-weight: bold; margin-top: 1.2em; cursor: pointer; }
"""


def _cell_html(value: str) -> str:
    css = ' class="pass"' if value.startswith(PASS_MARK) else ' class="fail"' if value.startswith(FAIL_MARK) else ""
    return f"<td{css}>{html.escape(value)}</td>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _block_html(block: Block, lead: bool, base_dir: Path) -> str:
    if isinstance(block, Text):
        css = ' class="lead"' if lead else ""
        return f"<p{css}>{html.escape(block.text)}</p>"
    if isinstance(block, Preformatted):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Image):
        return f'<img src="{_data_uri(base_dir / block.path)}" alt="{html.escape(block.alt)}">'
    caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
    body = "".join("<tr>" + "".join(_cell_html(str(c)) for c in row) + "</tr>" for row in block.rows)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section_html(section: Section, base_dir: Path) -> list[str]:
    blocks = [_block_html(block, lead=False, base_dir=base_dir) for block in section.blocks]
    if section.collapsed:
        return [f"<details><summary>{html.escape(section.title)}</summary>", *blocks, "</details>"]
    return [f"<h2>{html.escape(section.title)}</h2>", *blocks]


def render_html(title: str, lead: str | None, sections: list[Section], base_dir: Path) -> str:
    """A standalone HTML page; `lead` is the highlighted one-paragraph verdict at the top; image paths are
    relative to `base_dir`."""
    parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if lead:
        parts.append(_block_html(Text(lead), lead=True, base_dir=base_dir))
    for section in sections:
        parts += _section_html(section, base_dir)
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _block_markdown(block: Block) -> str:
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Preformatted):
        return f"```\n{block.text}\n```"
    if isinstance(block, Image):
        return f"![{block.alt}]({block.path})"
    lines = [f"*{block.caption}*", ""] if block.caption else []
    lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
    lines.append("|" + "---|" * len(block.headers))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def render_markdown(title: str, lead: str | None, sections: list[Section]) -> str:
    """The same document as Markdown (GitHub tables, images by relative path)."""
    parts = [f"# {title}"]
    if lead:
        parts.append(f"> {lead}")
    for section in sections:
        parts.append(f"## {section.title}")
        parts += [_block_markdown(block) for block in section.blocks]
    return "\n\n".join(parts) + "\n"


def render_text_table(table: Table) -> str:
    """A table as aligned plain text, for the terminal."""
    rows = [table.headers, *[[str(c) for c in row] for row in table.rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

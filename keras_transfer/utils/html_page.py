"""Self-contained HTML pages: images inlined as data URIs, inline CSS, no script, no network.

The pieces `report.html` (and the audit's page) are made of, as plain
functions returning HTML strings: `page_html` wraps sections in a document
whose Content-Security-Policy forbids every network fetch and every script,
so the file opens the same offline, from an e-mail or an archive.
Everything taken from data (file and class names) is escaped here.

Example:

```python
from keras_transfer.utils import html_page

body = html_page.section_html("Scores", html_page.table_html(["class", "F1"], [["roses", "0.91"]]))
html_page.write_page("page.html", "My report", [body])
```
"""

import base64
import html
import io

from keras_transfer.utils.files import atomic_write_file

# Images come from data: URIs, styles from the page itself; nothing else
# (no script, no font, no fetch) may load.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; width: 15em; font-size: 0.85em; }
figure img { width: 7.4em; height: 7.4em; object-fit: cover; }
figcaption { word-break: break-all; }
figure.pair { width: 17.5em; }
.leak { color: #b00; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
"""


def escape(text):
    """`text` made safe as HTML content or an attribute value."""
    return html.escape(str(text), quote=True)


def image_data_uri(image, max_size=256, image_format="JPEG"):
    """A `data:` URI holding `image`, shrunk to fit `max_size` pixels.

    Example:

    ```python
    uri = image_data_uri(np.zeros((64, 64, 3), "uint8"))  # 'data:image/jpeg;base64,...'
    ```

    Args:
        image: a `PIL.Image.Image` or a `uint8` array `(height, width, 3)`.
        max_size: the longest side of the inlined image, in pixels; None
            to keep the size.
        image_format: `"JPEG"` (photos) or `"PNG"` (plots, exact pixels).
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    if max_size is not None:
        image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=85)
    return bytes_data_uri(buffer.getvalue(), f"image/{image_format.lower()}")


def bytes_data_uri(data, mime_type):
    """A `data:` URI of raw bytes, e.g. a PNG file's: `bytes_data_uri(png, "image/png")`."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def table_html(header, rows, cell_styles=None):
    """An HTML table; every cell is escaped.

    Example:

    ```python
    table_html(["class", "recall"], [["roses", "0.80"], ["tulips", "0.75"]])
    ```

    Args:
        header: the column titles.
        rows: lists of cells (anything `str` accepts).
        cell_styles: None, or for each row a list of CSS declarations (or
            None) for its cells, e.g. `"background: #fdd"`.
    """
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        styles = cell_styles[r] if cell_styles else [None] * len(row)
        cells = "".join(
            f'<td style="{escape(style)}">{escape(cell)}</td>'
            if style
            else f"<td>{escape(cell)}</td>"
            for cell, style in zip(row, styles)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def thumbnail_grid_html(items):
    """A wrapping grid of figures: each one or more images above caption lines.

    Example:

    ```python
    thumbnail_grid_html([([uri], ["rose_1.jpg", "true: roses"])])
    ```

    Args:
        items: `(image_uris, caption_lines)` pairs; the URIs are `data:`
            URIs (see `image_data_uri`), the lines plain text.
    """
    figures = []
    for uris, lines in items:
        images = "".join(f'<img src="{escape(uri)}" alt="">' for uri in uris)
        caption = "<br>".join(escape(line) for line in lines)
        figures.append(f"<figure>{images}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="grid">{"".join(figures)}</div>'


def section_html(title, body_html, note=None):
    """A titled section around HTML already made safe, with an optional plain-text note."""
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{note_html}{body_html}</section>"


def page_html(title, sections):
    """A whole HTML document: `title`, then the sections' HTML, in order."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_page(path, title, sections):
    """Writes `page_html(title, sections)` to `path` in one step (UTF-8)."""
    # Bytes: the page says UTF-8, whatever the locale's encoding.
    html_bytes = page_html(title, sections).encode("utf-8")
    atomic_write_file(path, lambda f: f.write(html_bytes), binary=True)

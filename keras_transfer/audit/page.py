"""`audit.html`: the audit's findings as thumbnails, in one self-contained file.

The page holds its images as `data:` URIs and its style inline: it opens
offline, from an e-mail or an archive, and loads nothing from the network.
Each section shows its first `MAX_SHOWN` findings (the CSV files hold all).
`thumbnail_data_uri` is the one place where an image becomes page content.
"""

import os

from keras_transfer.data.images import decode_image_file
from keras_transfer.utils import html_page

# Side of the square thumbnails, in pixels, and findings shown per section.
THUMBNAIL_SIZE = 128
MAX_SHOWN = 100


def thumbnail_data_uri(path, size=THUMBNAIL_SIZE):
    """The image file as a `data:image/jpeg;base64,...` thumbnail, letterboxed.

    Example:

    ```python
    uri = thumbnail_data_uri("flowers/roses/1.jpg")  # 'data:image/jpeg;base64,/9j/...'
    ```
    """
    pixels = decode_image_file(path, (size, size), resize="pad")
    return html_page.image_data_uri(pixels, max_size=None)


def audit_page(audit, directory=""):
    """The HTML text of the page for an `Audit`.

    Example:

    ```python
    text = audit_page(keras_transfer.audit.audit_folder("flowers"))
    ```
    """
    title = f"Audit of {directory}" if directory else "Audit"
    sections = [
        _section(
            "Likely label errors",
            audit.label_issues,
            lambda x: _figure(
                [x.path],
                f"given <b>{_e(x.given)}</b>, likely <b>{_e(x.suggested)}</b>, score {x.score:.3f}",
            ),
        ),
        _section(
            "Duplicates and near duplicates",
            audit.duplicates,
            lambda x: _figure(
                [x.path_a, x.path_b],
                f"{_e(x.class_a)} / {_e(x.class_b)}, "
                + ("exact copy" if x.exact else f"similarity {x.similarity:.3f}")
                + (' <span class="leak">across the split</span>' if x.across_split else ""),
            ),
        ),
        _section(
            "Outliers",
            audit.outliers,
            lambda x: _figure([x.path], f"in <b>{_e(x.given)}</b>, score {x.score:.3f}"),
        ),
    ]
    return html_page.page_html(title, sections)


def _section(heading, findings, render):
    shown = findings[:MAX_SHOWN]
    note = f"{len(findings)} found"
    if len(findings) > len(shown):
        note += f"; the first {len(shown)} shown, all in the CSV file"
    body = "".join(render(x) for x in shown) if shown else "<p>None found.</p>"
    return html_page.section_html(heading, f'<div class="grid">{body}</div>', note + ".")


def _figure(paths, caption):
    images = "".join(
        f'<img src="{thumbnail_data_uri(p)}" alt="{_e(os.path.basename(p))}">' for p in paths
    )
    names = "<br>".join(_e(os.path.basename(p)) for p in paths)
    kind = ' class="pair"' if len(paths) > 1 else ""
    return f"<figure{kind}>{images}<figcaption>{names}<br>{caption}</figcaption></figure>"


_e = html_page.escape

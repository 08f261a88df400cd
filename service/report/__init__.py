"""HTML reports: why a video scored as it did (one page per video) and one index page per run.

    video_page(result, output=..., name=..., prompt=...) -> str   # self-contained HTML
    index_page(summary, videos=[...]) -> str

Pages are self-contained (images are inline data URIs; no CDN, no network: they open offline)
and every piece of user text (prompts, file names, reasons) is HTML-escaped by Jinja2's
autoescaping. Start at pages.py.
"""

from service.report.pages import IndexEntry, index_page, video_page, write_video_report

__all__ = ["IndexEntry", "index_page", "video_page", "write_video_report"]

"""Server-rendered pages (Jinja2 templates) and the static JavaScript that plots on them.

Everything a page needs is served by the app itself (no CDN): the pages work offline. The
plots fetch the same JSON the API serves (/api/v1/...)."""

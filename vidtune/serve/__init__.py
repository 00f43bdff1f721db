"""``vidtune serve``: a local web app over an index and runs (needs the ``web`` extra: FastAPI, uvicorn, Jinja2).

- :mod:`vidtune.serve.catalog`: what may be served, by opaque keys (the security boundary);
- :mod:`vidtune.serve.actions`: search, dedupe, tag and run summaries with the CLI's ``--json`` shapes;
- :mod:`vidtune.serve.thumbs`: sprite sheets decoded with vidtune's reader, cached;
- :mod:`vidtune.serve.validation`: the request models (pydantic, with bounds) and the ``{"error"}`` answers;
- :mod:`vidtune.serve.auth`: the token every request must carry when one is set;
- :mod:`vidtune.serve.uploads`: uploads streamed to a file that is deleted when the request ends;
- :mod:`vidtune.serve.results`: bounded memory caches and digest-checked result files;
- :mod:`vidtune.serve.labeling`: the Label page (a queue from ``suggest``, a crash-safe journal, retraining);
- :mod:`vidtune.serve.app`: the FastAPI routes, pages (``templates/``) and plain JavaScript (``static/``).
"""

from vidtune.serve.catalog import Catalog, serve_cache_dir


def create_app(catalog, device: str = "auto", token: str | None = None, label=None):
    from vidtune.serve.app import create_app as _create

    return _create(catalog, device=device, token=token, label=label)


__all__ = ["Catalog", "create_app", "serve_cache_dir"]

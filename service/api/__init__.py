"""The HTTP API (FastAPI). Start at app.py; routes/ has one module per resource; ingest/
reads the upload formats. Never imports torch."""

from service.api.app import InsecureConfigError, create_app

__all__ = ["create_app", "InsecureConfigError"]

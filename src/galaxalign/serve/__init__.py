"""The search web service: ``create_app(index_dir, checkpoint) -> FastAPI`` (API + web page)."""
from galaxalign.serve.app import create_app

__all__ = ["create_app"]

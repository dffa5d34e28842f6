"""``stylegrad serve``: the style-transfer service (FastAPI), its job store and workers.

Needs the ``serve`` extra (``pip install -e ".[serve]"``). :func:`create_app` builds the app
from :class:`ServiceSettings`; the README's *Service* section describes the API. The names
below load FastAPI only when used, so ``stylegrad --help`` works without the extra.
"""
__all__ = ["Limits", "ServiceSettings", "check_bind", "create_app", "is_loopback", "read_tokens"]


def __getattr__(name):
    if name in __all__:
        from stylegrad.service import app

        return getattr(app, name)
    raise AttributeError(name)

"""Loss terms: each term of the objective is one object with one home (``base.Term``).

``build(config)`` is the objective: the list of terms a config asks for, in the order the
engine evaluates them. A term class listed in :data:`TERM_CLASSES` joins the list when its
``applies(config)`` is true; one with ``replaces = "<name>"`` takes that term's place
(the masked style term replaces the style term when masks are given).

Pixel terms that are not config options (the video temporal loss,
``stylegrad.video.temporal.TemporalTerm``) are handed to ``Backend.optimize`` directly.
"""
from __future__ import annotations

from typing import List

from stylegrad.terms.base import Term
from stylegrad.terms.content import ContentTerm
from stylegrad.terms.masked_style import MaskedStyleTerm
from stylegrad.terms.style import StyleTerm
from stylegrad.terms.tv import TVTerm

TERM_CLASSES = (ContentTerm, StyleTerm, TVTerm, MaskedStyleTerm)


def build(config) -> List[Term]:
    """The terms of ``config``'s objective, content first, as the engine evaluates them."""
    chosen = [cls for cls in TERM_CLASSES if cls.applies(config)]
    replaced = {cls.replaces for cls in chosen} - {None}
    out: List[Term] = []
    for cls in chosen:
        if cls.name in replaced:
            continue
        out.append(cls(config))
    # a replacing term takes the place (evaluation order) of the one it replaces
    order = {c.name: i for i, c in enumerate(TERM_CLASSES)}
    place = {t.name: order[t.replaces or t.name] for t in out}
    return sorted(out, key=lambda t: place[t.name])


def check_inputs(config, content_hws, style_hws) -> None:
    """Every term's checks of the inputs that need no weights (masks readable, with their
    images' aspect ratios, colours that agree): run before any work. ``content_hws`` and
    ``style_hws``: (height, width) of the images, or None where not known yet."""
    for cls in TERM_CLASSES:
        if cls.applies(config):
            cls.check_inputs(config, content_hws, style_hws)


__all__ = ["Term", "ContentTerm", "StyleTerm", "TVTerm", "MaskedStyleTerm", "TERM_CLASSES", "build", "check_inputs"]

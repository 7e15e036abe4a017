"""The single-network methods whose objective is a sum of terms: scratch (the label loss alone, the paper's
baseline), SSKT, KD, FixMatch, and their compositions (methods/terms.py)."""

from __future__ import annotations

import sskt.methods.fixmatch  # noqa: F401 (registers the FixMatch term)
import sskt.methods.kd  # noqa: F401 (registers the KD term)
import sskt.methods.sskt  # noqa: F401 (registers the SSKT term)
from sskt.methods.base import METHODS
from sskt.methods.terms import register_compositions

COMPOSITIONS = ["scratch", "sskt", "kd", "fixmatch", "kd+sskt", "fixmatch+sskt", "fixmatch+kd", "fixmatch+kd+sskt"]
"""Method names served by ``Composite``: the terms of every '+'-joined family, the label loss once."""

register_compositions(METHODS, COMPOSITIONS)

"""Expert EHR models (one file each), the shared ExpertModule, and per-patient feature importance.

Importing this package registers every network under its config name (``expert=<name>``).
"""

from eagrl.experts import adacare, concare, gru, lstm, retain, stagenet, transformer  # noqa: F401
from eagrl.experts.base import EXPERTS, ExpertNet, register_expert

__all__ = ["EXPERTS", "ExpertNet", "register_expert"]

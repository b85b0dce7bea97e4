"""The domain: plain models, enums, errors, who is asking (`Actor`) and money, shared by every other part.

It imports nothing else from the bot, nor storage, providers or Discord: everything else imports it.
`from bot.domain import X` works for every name here. The submodules: `models` (characters, references,
settings, the ledger), `jobs` (the render queue's job, its kind and states), `actor` (who is asking), `money`
(`Money`, the one type of amounts: integer USD micros) and `errors` (messages meant for members).
"""

from bot.domain.actor import Actor
from bot.domain.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError, UserFacingError
from bot.domain.jobs import BOT_ACCOUNT, BoundImage, Job, JobState, ShotParams, WorkKind
from bot.domain.models import (
    AuditEntry,
    Character,
    Element,
    ElementKind,
    Frozen,
    GuildSettings,
    LedgerEntry,
    Page,
    Quality,
    ReferenceView,
    ServerRules,
    StoredImage,
    T,
    View,
    Visibility,
)
from bot.domain.money import MICROS_PER_USD, Money

__all__ = [
    "BOT_ACCOUNT",
    "MICROS_PER_USD",
    "Actor",
    "AuditEntry",
    "BoundImage",
    "Character",
    "ConflictError",
    "Element",
    "ElementKind",
    "Frozen",
    "GuildSettings",
    "InvalidInputError",
    "Job",
    "JobState",
    "LedgerEntry",
    "Money",
    "NotAllowedError",
    "NotFoundError",
    "Page",
    "Quality",
    "ReferenceView",
    "ServerRules",
    "ShotParams",
    "StoredImage",
    "T",
    "UserFacingError",
    "View",
    "Visibility",
    "WorkKind",
]

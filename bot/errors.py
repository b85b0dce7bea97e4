"""The user-facing errors, re-exported from their home in `bot.domain.errors`."""

from bot.domain.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError, UserFacingError

__all__ = ["ConflictError", "InvalidInputError", "NotAllowedError", "NotFoundError", "UserFacingError"]

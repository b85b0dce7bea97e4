"""Errors whose message is meant for the member who caused them (shown ephemerally, never logged as bugs)."""


class UserFacingError(Exception):
    """A refusal or problem the member can act on. `str(error)` is the whole message they see."""


class NotFoundError(UserFacingError):
    pass


class NotAllowedError(UserFacingError):
    pass


class ConflictError(UserFacingError):
    pass


class InvalidInputError(UserFacingError):
    pass

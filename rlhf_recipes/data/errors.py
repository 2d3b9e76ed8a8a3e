"""The one exception type the data layer raises for bad data or bad data settings."""

from rlhf_recipes.config.errors import UserError


class DataError(UserError):
    """Data that cannot be used as given: the message names the file, row or column at fault."""

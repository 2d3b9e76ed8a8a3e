"""The one exception type the data layer raises for bad data or bad data settings."""


class DataError(ValueError):
    """Data that cannot be used as given: the message names the file, row or column at fault."""

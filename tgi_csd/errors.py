"""The one exception type users see for bad input."""


class ConfigError(ValueError):
    """Bad user input: the message names the field and how to fix it."""

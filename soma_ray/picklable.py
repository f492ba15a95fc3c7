"""Exceptions that cross Ray (an actor's error is pickled to its caller) keep their fields."""
from __future__ import annotations


class PicklesWithFields:
    """Mix into an exception class whose __init__ takes other arguments than its message:
    Exception's default pickling would call it with the message alone."""

    def __reduce__(self):
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, fields: dict) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(fields)
    return error

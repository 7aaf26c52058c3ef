"""The one exception type of the soup builder."""

from __future__ import annotations


class SoupError(ValueError):
    """A soup that cannot be built as asked: bad weights, incompatible ingredients, non-finite
    values, an output directory in the way. The message names the flag, ingredient or tensor to
    look at. Subclasses ValueError so that callers validating configs catch it the usual way."""

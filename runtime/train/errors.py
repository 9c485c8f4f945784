"""Training failures a user can cause; one line each, naming the file, key and what is allowed."""

from ..errors import RuntimeFailure


class TrainingError(RuntimeFailure):
    """Bad training data, a recipe the loop cannot follow, a damaged checkpoint, a full disk."""

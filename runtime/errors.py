"""Errors raised by taxonc.runtime.

Every message is one line, so a CLI can print it after "error:" without a traceback.
"""


class RuntimeFailure(Exception):
    """Base class for failures the runtime reports to the user (bad files, bad arguments)."""


class TokenizerError(RuntimeFailure):
    """A tokenizer could not be trained, loaded or used."""


class WeightsError(RuntimeFailure):
    """A weights file is missing, damaged, or does not fit the model."""


class ArtifactError(RuntimeFailure):
    """A compiled directory is incomplete or inconsistent."""

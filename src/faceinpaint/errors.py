"""The one exception type that user-facing code raises for bad input, and the two kinds the server answers apart."""


class InpaintError(ValueError):
    """A problem with what the user gave us (a file, a mask, a model name, an option).

    The CLI prints its message as a single line and exits non-zero; the server answers it with a 4xx.
    Messages are complete sentences that name the offending input, so no traceback is needed.
    """


class OverLimitError(InpaintError):
    """An input over a size limit (pixels, batch): the server answers 413, the CLI like any InpaintError."""


class NotAnImageError(InpaintError):
    """Bytes that no image format recognises: the server answers 415, the CLI like any InpaintError."""

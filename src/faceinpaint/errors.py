"""The one exception type that user-facing code raises for bad input."""


class InpaintError(ValueError):
    """A problem with what the user gave us (a file, a mask, a model name, an option).

    The CLI prints its message as a single line and exits non-zero; the server answers it with a 4xx.
    Messages are complete sentences that name the offending input, so no traceback is needed.
    """

"""The one exception type the user sees.

Every failure caused by the user's input (a missing dataset, a corrupt image, a bad config
key, a class with too few images, a failed download) raises :class:`HalsalError` with a
message that names the input and says what to do. The CLI prints it without a traceback.
"""


class HalsalError(RuntimeError):
    """A failure the user can fix; the message names the input and the remedy."""

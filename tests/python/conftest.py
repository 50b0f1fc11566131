import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Run from a source tree (make test-python builds the extension in place).
try:
    import buttress  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.join(ROOT, "python"))

try:
    from hypothesis import settings

    # No example database in the source tree; runs stay reproducible by seed.
    settings.register_profile("buttress", database=None, derandomize=True)
    settings.load_profile("buttress")
except ImportError:  # pragma: no cover
    pass

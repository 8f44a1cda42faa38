"""`chainrule.nn.functional` is `chainrule.functional`, so `import chainrule.nn.functional as F` works as in PyTorch."""

from ..functional import *  # noqa: F403
from ..functional import __all__  # noqa: F401

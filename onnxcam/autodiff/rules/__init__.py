"""Gradient rules, one module per family of ops. Importing this package fills the rule table."""

from onnxcam.autodiff.rules import (  # noqa: F401  (imported for their registrations)
    activation,
    attention,
    control,
    conv,
    elementwise,
    linalg,
    nondiff,
    norm,
    pool,
    quantize,
    reduce,
    recurrent,
    resize,
    shape,
)

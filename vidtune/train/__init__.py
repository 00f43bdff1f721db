"""Training, evaluation and inference for video classifiers.

``vidtune.train(data, out, cfg)`` is the facade's training function, and ``vidtune.train`` is also
this subpackage: once any ``vidtune.train.*`` module is imported, Python binds the package to that
name. So the package itself is callable and forwards to :func:`vidtune.train.trainer.train`.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from vidtune.train.trainer import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""Former home of the ImageNet VID converter, now :mod:`clab.data.converters.imagenet_vid`; kept so that
``from clab.data.imagenet_vid import convert`` goes on working."""
from clab.data.converters.imagenet_vid import *  # noqa: F401,F403
from clab.data.converters.imagenet_vid import __all__  # noqa: F401

"""moved to jaxinit.app.models; this path is kept.

The names here are the objects of :mod:`jaxinit.app.models`; patch that module, not this one.
"""

from .app.models import MLP as MLP
from .app.models import NNXMLP as NNXMLP
from .app.models import Activation as Activation
from .app.models import ConvNet as ConvNet
from .app.models import NNXConvNet as NNXConvNet
from .app.models import NNXResBlock as NNXResBlock
from .app.models import NNXResNet as NNXResNet
from .app.models import NNXTransformer as NNXTransformer
from .app.models import NNXTransformerBlock as NNXTransformerBlock
from .app.models import ResBlock as ResBlock
from .app.models import ResNet as ResNet
from .app.models import Transformer as Transformer
from .app.models import TransformerBlock as TransformerBlock

__all__ = [
    "MLP",
    "NNXMLP",
    "Activation",
    "ConvNet",
    "NNXConvNet",
    "NNXResBlock",
    "NNXResNet",
    "NNXTransformer",
    "NNXTransformerBlock",
    "ResBlock",
    "ResNet",
    "Transformer",
    "TransformerBlock",
]

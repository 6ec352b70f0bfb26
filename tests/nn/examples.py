"""Central table: constructor arguments and forward inputs for every torch.nn class.

``EXAMPLES[name] = Example(args, kwargs, inputs)``: ``args``/``kwargs`` build the
layer (a callable receives the namespace, ``borch.nn`` or ``torch.nn``, so nested
layers come from the same one); ``inputs()`` returns the forward arguments, or
``None`` for classes that are not called (containers of modules, base classes).
A test fails with "Please add X" when torch.nn exports a class missing here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Example:
    args: tuple | Callable[[Any], tuple] = ()
    kwargs: dict = field(default_factory=dict)
    inputs: Callable[[], tuple] | None = None
    #: why the forward cannot run here (the class still constructs)
    no_forward: str | None = None
    #: the warning torch itself gives on construction (deprecated classes)
    warns: type[Warning] | None = None


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def labels(count: int, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, (count,))


def signs(*shape: int) -> torch.Tensor:
    return torch.randint(0, 2, shape).float() * 2 - 1


def _unpool(dims: int):
    def inputs():
        pool = (None, torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)[dims]
        x = r(1, 2, *([4] * dims))
        return pool(2, return_indices=True)(x)

    return inputs


def _ctc_inputs():
    log_probs = r(6, 2, 4).log_softmax(2)
    targets = torch.randint(1, 4, (2, 3))
    return log_probs, targets, torch.tensor([6, 6]), torch.tensor([3, 2])


def _multilabel_margin():
    return r(2, 4), torch.tensor([[3, 0, -1, 1], [1, 2, 3, -1]])


SEQ = lambda: (r(5, 2, 3),)  # noqa: E731  (time, batch, features)
IMG = lambda: (r(2, 3, 6, 6),)  # noqa: E731

EXAMPLES: dict[str, Example] = {
    "AdaptiveAvgPool1d": Example((2,), inputs=lambda: (r(2, 3, 8),)),
    "AdaptiveAvgPool2d": Example((2,), inputs=IMG),
    "AdaptiveAvgPool3d": Example((2,), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "AdaptiveLogSoftmaxWithLoss": Example(
        (8, 10, [4]), inputs=lambda: (r(5, 8), labels(5, 10))
    ),
    "AdaptiveMaxPool1d": Example((2,), inputs=lambda: (r(2, 3, 8),)),
    "AdaptiveMaxPool2d": Example((2,), inputs=IMG),
    "AdaptiveMaxPool3d": Example((2,), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "AlphaDropout": Example((0.2,), inputs=lambda: (r(4, 5),)),
    "AvgPool1d": Example((2,), inputs=lambda: (r(2, 3, 8),)),
    "AvgPool2d": Example((2,), inputs=IMG),
    "AvgPool3d": Example((2,), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "BCELoss": Example(inputs=lambda: (torch.rand(4, 3), torch.rand(4, 3))),
    "BCEWithLogitsLoss": Example(inputs=lambda: (r(4, 3), torch.rand(4, 3))),
    "BatchNorm1d": Example((3,), inputs=lambda: (r(4, 3),)),
    "BatchNorm2d": Example((3,), inputs=IMG),
    "BatchNorm3d": Example((2,), inputs=lambda: (r(2, 2, 3, 3, 3),)),
    "Bilinear": Example((3, 4, 5), inputs=lambda: (r(2, 3), r(2, 4))),
    "CELU": Example(inputs=lambda: (r(4, 5),)),
    "CTCLoss": Example(inputs=_ctc_inputs),
    "ChannelShuffle": Example((2,), inputs=lambda: (r(1, 4, 2, 2),)),
    "CircularPad1d": Example((1,), inputs=lambda: (r(1, 2, 4),)),
    "CircularPad2d": Example((1,), inputs=lambda: (r(1, 2, 4, 4),)),
    "CircularPad3d": Example((1,), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "ConstantPad1d": Example((1, 0.5), inputs=lambda: (r(1, 2, 4),)),
    "ConstantPad2d": Example((1, 0.5), inputs=lambda: (r(1, 2, 4, 4),)),
    "ConstantPad3d": Example((1, 0.5), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "Container": Example(no_forward="abstract container", warns=FutureWarning),
    "Conv1d": Example((2, 3, 3), inputs=lambda: (r(2, 2, 8),)),
    "Conv2d": Example((3, 4, 3), inputs=IMG),
    "Conv3d": Example((2, 3, 3), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "ConvTranspose1d": Example((2, 3, 3), inputs=lambda: (r(2, 2, 5),)),
    "ConvTranspose2d": Example((3, 2, 3), inputs=IMG),
    "ConvTranspose3d": Example((2, 3, 2), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "CosineEmbeddingLoss": Example(inputs=lambda: (r(4, 5), r(4, 5), signs(4))),
    "CosineSimilarity": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "CrossEntropyLoss": Example(inputs=lambda: (r(4, 5), labels(4, 5))),
    "CrossMapLRN2d": Example((3,), inputs=lambda: (r(2, 4, 5, 5),)),
    "DataParallel": Example(lambda nn: (nn.Linear(3, 2),), inputs=lambda: (r(4, 3),)),
    "Dropout": Example((0.5,), inputs=lambda: (r(4, 5),)),
    "Dropout1d": Example((0.5,), inputs=lambda: (r(2, 3, 4),)),
    "Dropout2d": Example((0.5,), inputs=IMG),
    "Dropout3d": Example((0.5,), inputs=lambda: (r(2, 3, 2, 2, 2),)),
    "ELU": Example(inputs=lambda: (r(4, 5),)),
    "Embedding": Example((10, 3), inputs=lambda: (torch.randint(0, 10, (2, 4)),)),
    "EmbeddingBag": Example((10, 3), inputs=lambda: (torch.randint(0, 10, (2, 4)),)),
    "FeatureAlphaDropout": Example((0.2,), inputs=IMG),
    "Flatten": Example(inputs=lambda: (r(2, 3, 4),)),
    "Fold": Example(
        kwargs={"output_size": (4, 4), "kernel_size": (2, 2)},
        inputs=lambda: (r(1, 12, 9),),
    ),
    "FractionalMaxPool2d": Example(
        (2,), {"output_size": (3, 3)}, inputs=lambda: (r(1, 2, 6, 6),)
    ),
    "FractionalMaxPool3d": Example(
        (2,), {"output_size": (2, 2, 2)}, inputs=lambda: (r(1, 2, 5, 5, 5),)
    ),
    "GELU": Example(inputs=lambda: (r(4, 5),)),
    "GLU": Example(inputs=lambda: (r(2, 4),)),
    "GRU": Example((3, 4), {"num_layers": 2}, inputs=SEQ),
    "GRUCell": Example((3, 4), inputs=lambda: (r(2, 3),)),
    "GaussianNLLLoss": Example(
        inputs=lambda: (r(4, 2), r(4, 2), torch.rand(4, 2) + 0.1)
    ),
    "GroupNorm": Example((2, 4), inputs=lambda: (r(2, 4, 3),)),
    "Hardshrink": Example(inputs=lambda: (r(4, 5),)),
    "Hardsigmoid": Example(inputs=lambda: (r(4, 5),)),
    "Hardswish": Example(inputs=lambda: (r(4, 5),)),
    "Hardtanh": Example(inputs=lambda: (r(4, 5),)),
    "HingeEmbeddingLoss": Example(inputs=lambda: (r(4, 5), signs(4, 5))),
    "HuberLoss": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "Identity": Example(inputs=lambda: (r(4, 5),)),
    "InstanceNorm1d": Example((3,), {"affine": True}, inputs=lambda: (r(2, 3, 5),)),
    "InstanceNorm2d": Example((3,), {"affine": True}, inputs=IMG),
    "InstanceNorm3d": Example(
        (2,), {"affine": True}, inputs=lambda: (r(2, 2, 3, 3, 3),)
    ),
    "KLDivLoss": Example(
        kwargs={"reduction": "batchmean"},
        inputs=lambda: (r(4, 5).log_softmax(1), r(4, 5).softmax(1)),
    ),
    "L1Loss": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "LPPool1d": Example((2, 2), inputs=lambda: (r(2, 3, 8),)),
    "LPPool2d": Example((2, 2), inputs=IMG),
    "LPPool3d": Example((2, 2), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "LSTM": Example((3, 4), {"proj_size": 2, "bidirectional": True}, inputs=SEQ),
    "LSTMCell": Example((3, 4), inputs=lambda: (r(2, 3),)),
    "LayerNorm": Example((4,), inputs=lambda: (r(2, 4),)),
    "LazyBatchNorm1d": Example(inputs=lambda: (r(4, 3),)),
    "LazyBatchNorm2d": Example(inputs=IMG),
    "LazyBatchNorm3d": Example(inputs=lambda: (r(2, 2, 3, 3, 3),)),
    "LazyConv1d": Example((3, 3), inputs=lambda: (r(2, 2, 8),)),
    "LazyConv2d": Example((4, 3), inputs=IMG),
    "LazyConv3d": Example((3, 3), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "LazyConvTranspose1d": Example((3, 3), inputs=lambda: (r(2, 2, 5),)),
    "LazyConvTranspose2d": Example((2, 3), inputs=IMG),
    "LazyConvTranspose3d": Example((3, 2), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "LazyInstanceNorm1d": Example(
        kwargs={"affine": True}, inputs=lambda: (r(2, 3, 5),)
    ),
    "LazyInstanceNorm2d": Example(kwargs={"affine": True}, inputs=IMG),
    "LazyInstanceNorm3d": Example(
        kwargs={"affine": True}, inputs=lambda: (r(2, 2, 3, 3, 3),)
    ),
    "LazyLinear": Example((4,), inputs=lambda: (r(2, 3),)),
    "LeakyReLU": Example(inputs=lambda: (r(4, 5),)),
    "Linear": Example((3, 4), inputs=lambda: (r(2, 3),)),
    "LinearCrossEntropyLoss": Example(
        (6, 5), {"bias": True}, inputs=lambda: (r(4, 6), labels(4, 5))
    ),
    "LocalResponseNorm": Example((2,), inputs=lambda: (r(2, 4, 5),)),
    "LogSigmoid": Example(inputs=lambda: (r(4, 5),)),
    "LogSoftmax": Example(kwargs={"dim": 1}, inputs=lambda: (r(4, 5),)),
    "MSELoss": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "MarginRankingLoss": Example(inputs=lambda: (r(4), r(4), signs(4))),
    "MaxPool1d": Example((2,), inputs=lambda: (r(2, 3, 8),)),
    "MaxPool2d": Example((2,), inputs=IMG),
    "MaxPool3d": Example((2,), inputs=lambda: (r(1, 2, 4, 4, 4),)),
    "MaxUnpool1d": Example((2,), inputs=_unpool(1)),
    "MaxUnpool2d": Example((2,), inputs=_unpool(2)),
    "MaxUnpool3d": Example((2,), inputs=_unpool(3)),
    "Mish": Example(inputs=lambda: (r(4, 5),)),
    "ModuleDict": Example(
        lambda nn: ({"a": nn.Linear(2, 2)},), no_forward="container of modules"
    ),
    "ModuleList": Example(
        lambda nn: ([nn.Linear(2, 2)],), no_forward="container of modules"
    ),
    "MultiLabelMarginLoss": Example(inputs=_multilabel_margin),
    "MultiLabelSoftMarginLoss": Example(
        inputs=lambda: (r(2, 4), torch.randint(0, 2, (2, 4)).float())
    ),
    "MultiMarginLoss": Example(inputs=lambda: (r(3, 4), labels(3, 4))),
    "MultiheadAttention": Example(
        (8, 2), inputs=lambda: (r(3, 2, 8), r(4, 2, 8), r(4, 2, 8))
    ),
    "NLLLoss": Example(inputs=lambda: (r(4, 5).log_softmax(1), labels(4, 5))),
    "NLLLoss2d": Example(
        inputs=lambda: (r(2, 3, 2, 2).log_softmax(1), torch.randint(0, 3, (2, 2, 2))),
        warns=FutureWarning,
    ),
    "PReLU": Example(inputs=lambda: (r(4, 5),)),
    "PairwiseDistance": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "ParameterDict": Example(
        lambda nn: ({"a": torch.nn.Parameter(torch.ones(2))},),
        no_forward="container of parameters",
    ),
    "ParameterList": Example(
        lambda nn: ([torch.nn.Parameter(torch.ones(2))],),
        no_forward="container of parameters",
    ),
    "PixelShuffle": Example((2,), inputs=lambda: (r(1, 4, 2, 2),)),
    "PixelUnshuffle": Example((2,), inputs=lambda: (r(1, 1, 4, 4),)),
    "PoissonNLLLoss": Example(inputs=lambda: (r(4, 5), torch.rand(4, 5) * 3)),
    "RMSNorm": Example((4,), inputs=lambda: (r(2, 4),)),
    "RNN": Example((3, 4), {"nonlinearity": "relu"}, inputs=SEQ),
    "RNNBase": Example(("GRU", 3, 4), no_forward="base class without forward"),
    "RNNCell": Example((3, 4), inputs=lambda: (r(2, 3),)),
    "RNNCellBase": Example((3, 4, True, 2), no_forward="base class without forward"),
    "RReLU": Example(inputs=lambda: (r(4, 5),)),
    "ReLU": Example(inputs=lambda: (r(4, 5),)),
    "ReLU6": Example(inputs=lambda: (r(4, 5),)),
    "ReflectionPad1d": Example((1,), inputs=lambda: (r(1, 2, 4),)),
    "ReflectionPad2d": Example((1,), inputs=lambda: (r(1, 2, 4, 4),)),
    "ReflectionPad3d": Example((1,), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "ReplicationPad1d": Example((1,), inputs=lambda: (r(1, 2, 4),)),
    "ReplicationPad2d": Example((1,), inputs=lambda: (r(1, 2, 4, 4),)),
    "ReplicationPad3d": Example((1,), inputs=lambda: (r(1, 2, 3, 3, 3),)),
    "SELU": Example(inputs=lambda: (r(4, 5),)),
    "Sequential": Example(
        lambda nn: (nn.Linear(3, 2), nn.ReLU()), inputs=lambda: (r(4, 3),)
    ),
    "SiLU": Example(inputs=lambda: (r(4, 5),)),
    "Sigmoid": Example(inputs=lambda: (r(4, 5),)),
    "SmoothL1Loss": Example(inputs=lambda: (r(4, 5), r(4, 5))),
    "SoftMarginLoss": Example(inputs=lambda: (r(4, 5), signs(4, 5))),
    "Softmax": Example(kwargs={"dim": 1}, inputs=lambda: (r(4, 5),)),
    "Softmax2d": Example(inputs=IMG),
    "Softmin": Example(kwargs={"dim": 1}, inputs=lambda: (r(4, 5),)),
    "Softplus": Example(inputs=lambda: (r(4, 5),)),
    "Softshrink": Example(inputs=lambda: (r(4, 5),)),
    "Softsign": Example(inputs=lambda: (r(4, 5),)),
    "SyncBatchNorm": Example(
        (3,), inputs=IMG, no_forward="needs a GPU and torch.distributed"
    ),
    "Tanh": Example(inputs=lambda: (r(4, 5),)),
    "Tanhshrink": Example(inputs=lambda: (r(4, 5),)),
    "Threshold": Example((0.1, 20.0), inputs=lambda: (r(4, 5),)),
    "Transformer": Example(
        kwargs={
            "d_model": 8,
            "nhead": 2,
            "num_encoder_layers": 1,
            "num_decoder_layers": 1,
            "dim_feedforward": 16,
            "batch_first": True,
        },
        inputs=lambda: (r(2, 4, 8), r(2, 3, 8)),
    ),
    "TransformerDecoder": Example(
        lambda nn: (nn.TransformerDecoderLayer(8, 2, 16), 2),
        inputs=lambda: (r(3, 2, 8), r(4, 2, 8)),
    ),
    "TransformerDecoderLayer": Example(
        (8, 2, 16), inputs=lambda: (r(3, 2, 8), r(4, 2, 8))
    ),
    "TransformerEncoder": Example(
        lambda nn: (nn.TransformerEncoderLayer(8, 2, 16), 2),
        {"enable_nested_tensor": False},
        inputs=lambda: (r(4, 2, 8),),
    ),
    "TransformerEncoderLayer": Example((8, 2, 16), inputs=lambda: (r(4, 2, 8),)),
    "TripletMarginLoss": Example(inputs=lambda: (r(4, 5), r(4, 5), r(4, 5))),
    "TripletMarginWithDistanceLoss": Example(
        inputs=lambda: (r(4, 5), r(4, 5), r(4, 5))
    ),
    "Unflatten": Example((1, (2, 2)), inputs=lambda: (r(3, 4),)),
    "Unfold": Example(kwargs={"kernel_size": 2}, inputs=lambda: (r(1, 2, 4, 4),)),
    "Upsample": Example(kwargs={"scale_factor": 2}, inputs=lambda: (r(1, 2, 3, 3),)),
    "UpsamplingBilinear2d": Example(
        kwargs={"scale_factor": 2}, inputs=lambda: (r(1, 2, 3, 3),)
    ),
    "UpsamplingNearest2d": Example(
        kwargs={"scale_factor": 2}, inputs=lambda: (r(1, 2, 3, 3),)
    ),
    "ZeroPad1d": Example((1,), inputs=lambda: (r(1, 2, 4),)),
    "ZeroPad2d": Example((1,), inputs=lambda: (r(1, 2, 4, 4),)),
    "ZeroPad3d": Example((1,), inputs=lambda: (r(1, 2, 3, 3, 3),)),
}


def build(name: str, namespace: Any):
    """Construct ``namespace.<name>`` with the table's arguments."""
    example = EXAMPLES[name]
    args = example.args(namespace) if callable(example.args) else example.args
    return getattr(namespace, name)(*args, **example.kwargs)

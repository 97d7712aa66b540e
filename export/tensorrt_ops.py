"""Which operators and data types TensorRT's ONNX parser takes, as data: onnx-tensorrt's operator table
(docs/operators.md of TensorRT 10.15) and the importer's own type checks. `tensorrt_lint` checks graphs
against it; a new TensorRT release changes this file only (bump `TABLE_VERSION` and the op -> version map).
"""

from __future__ import annotations

# Which operators TensorRT's ONNX parser imports: onnx-tensorrt's operator table (docs/operators.md of
# TensorRT 10.15), as data: op -> the TensorRT version that added it ("" = 10.0 or older).
TABLE_VERSION = "10.15"
OPSET_RANGE = (9, 24)


def _words(text: str) -> list[str]:
    return text.split()


SUPPORTED_OPS: dict[str, str] = {
    **dict.fromkeys(_words(
        "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast "
        "CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv "
        "DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor "
        "Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater "
        "GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler "
        "InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop "
        "LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul "
        "Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear "
        "RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 "
        "ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu "
        "Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND "
        "Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt "
        "Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor"), ""),
    **dict.fromkeys(_words("BlackmanWindow HammingWindow HannWindow"), "10.4"),
    "STFT": "10.5",
    "Attention": "10.14",
    **dict.fromkeys(_words("RMSNormalization RotaryEmbedding TensorScatter"), "10.15"),
}

_UNSUPPORTED_REASONS = {
    "sequence types have no TensorRT equivalent": "ConcatFromSequence SequenceAt SequenceConstruct "
    "SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SplitToSequence",
    "string tensors have no TensorRT equivalent": "RegexFullMatch StringConcat StringNormalizer StringSplit "
    "TfIdfVectorizer",
    "optional types have no TensorRT equivalent": "Optional OptionalGetElement OptionalHasElement",
    "integer-arithmetic quantized ops are unsupported (use QuantizeLinear/DequantizeLinear)":
        "ConvInteger MatMulInteger QLinearConv QLinearMatMul DynamicQuantizeLinear",
    "bitwise ops are unsupported": "BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor",
    "unsupported by TensorRT's ONNX parser": "AffineGrid Bernoulli Col2Im CenterCropPad Compress DFT Det "
    "ImageDecoder MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss "
    "SoftmaxCrossEntropyLoss Unique",
}
UNSUPPORTED_OPS: dict[str, str] = {op: why for why, ops in _UNSUPPORTED_REASONS.items() for op in _words(ops)}

# Data types an operator refuses on its data inputs. Only refusals with firm evidence are listed: the
# importer's own type checks (onnx-tensorrt's onnxOpImporters.cpp/importerUtils.cpp: unary math ops take
# floats only, activations refuse integers, element-wise arithmetic refuses bool, And/Or/Xor/Not take bool
# only, MatMul/Gemm/PRelu refuse integers) and layers that compute in floating point only (convolution,
# pooling, normalization, softmax, einsum, recurrent). Where the operator table lists fewer types than the
# importer accepts (e.g. Clip and Relu on int64, Equal on bool), nothing is reported: no overclaiming.
_NON_FLOAT = frozenset({"bool", "int32", "int64", "uint8", "int8"})
_INTS_BOOL = frozenset({"bool", "int32", "int64", "uint8"})
_NON_BOOL = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "uint8", "int8"})


def _rejects(types: frozenset, names: str) -> dict[str, frozenset]:
    return dict.fromkeys(_words(names), types)


REJECTED_TYPES: dict[str, frozenset] = {
    **_rejects(_INTS_BOOL, "Exp Log Sqrt Reciprocal Sin Cos Tan Sinh Cosh Asin Acos Atan Asinh Acosh Atanh "
                           "Ceil Floor Erf Round Sigmoid Tanh Softplus Softsign Elu Selu LeakyRelu HardSigmoid "
                           "ThresholdedRelu ScaledTanh ParametricSoftplus PRelu"),
    **_rejects(_NON_FLOAT, "MatMul Gemm Conv ConvTranspose AveragePool MaxPool LpPool GlobalAveragePool "
                           "GlobalMaxPool GlobalLpPool BatchNormalization InstanceNormalization "
                           "LayerNormalization GroupNormalization Softmax LogSoftmax Einsum LRN RNN GRU LSTM "
                           "Hardmax"),
    **_rejects(frozenset({"bool", "uint8"}), "Abs Sign Neg Clip Add Sub Mul Div Max Min Sum Mean Greater "
                                             "Less GreaterOrEqual LessOrEqual Mod"),
    **_rejects(_NON_BOOL, "And Or Xor Not"),
    "Pow": frozenset({"bool", "uint8"}),   # integer Pow since TensorRT 10.8 (older: see POW_INTS_SINCE)
}
POW_INTS_SINCE = "10.8"

# Which inputs carry the data the refusals are about (default: input 0).
DATA_INPUTS: dict[str, tuple[int, ...] | str] = {
    **dict.fromkeys(_words("Add Sub Mul Div Mod Max Min Sum Mean Greater GreaterOrEqual Less LessOrEqual "
                           "And Or Xor MatMul Einsum"), "all"),
    "Gemm": (0, 1), "PRelu": (0, 1),
}

# ONNX element types -> names; the ones TensorRT has no type for at all.
ONNX_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128",
    16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
    21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 25: "uint2", 26: "int2",
    27: "float6e2m3", 28: "float6e3m2",
}
TRT_TYPES = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "bool", "uint8", "int8",
                        "float8e4m3fn", "int4", "float4e2m1"})
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


def type_name(elem_type: int) -> str:
    """An ONNX element type (TensorProto.FLOAT ...) by name ("float32" ...)."""
    return ONNX_TYPES.get(int(elem_type), f"type#{elem_type}")

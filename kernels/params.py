"""ctypes mirrors of the kernels' parameter structs (the C definitions are in the .cu files).

Each kernel takes one of these by value. The GPU path passes a pointer to it to cuLaunchKernel, the
CPU emulation passes the same bytes to the g++ build, and `EmulatedDevice` checks at load that every
size and field offset here equals the C one.
"""

import ctypes

c_i64 = ctypes.c_int64
c_int = ctypes.c_int32
c_float = ctypes.c_float
c_ptr = ctypes.c_void_p


class PreprocessOutput(ctypes.Structure):
    _fields_ = [
        ("data", c_ptr),
        ("channel_stride", c_i64),
        ("height", c_int),
        ("width", c_int),
        ("dtype", c_int),
        ("blocks", c_int),
        ("round_u8", c_int),
        ("pad_", c_int),
    ]


class PreprocessParams(ctypes.Structure):
    _fields_ = [
        ("src", c_ptr),
        ("src_uv", c_ptr),
        ("pitch", c_i64),
        ("uv_pitch", c_i64),
        ("out", PreprocessOutput * 2),
        ("mean", c_float * 3),
        ("std", c_float * 3),
        ("width", c_int),
        ("height", c_int),
        ("format", c_int),
        ("pad_", c_int),
    ]


class MaskParams(ctypes.Structure):
    _fields_ = [
        ("logits", c_ptr),
        ("mask", c_ptr),
        ("stats", c_ptr),
        ("logits_pitch", c_i64),
        ("mask_pitch", c_i64),
        ("logits_height", c_int),
        ("logits_width", c_int),
        ("height", c_int),
        ("width", c_int),
        ("logits_dtype", c_int),
        ("threshold", c_float),
    ]


class SpanParams(ctypes.Structure):
    _fields_ = [
        ("logits", c_ptr),
        ("spans", c_ptr),
        ("windows", c_ptr),
        ("order", c_ptr),
        ("duration", c_float),
        ("round_to", c_float),
        ("queries", c_int),
        ("top_k", c_int),
    ]


# C struct name -> mirror, for the layout check.
STRUCTS = {cls.__name__: cls for cls in (PreprocessOutput, PreprocessParams, MaskParams, SpanParams)}

"""torchvision ``transforms.Compose`` -> an :class:`~packserve.bundle.ImagePreprocess` spec (#17).

``pack(model, ..., preprocess=Compose([...]))`` records the evaluation transforms a model was
trained with instead of a re-typed copy. torchvision is never imported (it cannot be installed
beside every torch packserve supports, and reading a recipe needs no import): each transform is
recognised by its class name and read through torchvision's documented public attributes
(``size``, ``interpolation``, ``antialias``, ``max_size``, ``mean``, ``std``, ``dtype``,
``scale``, ``num_output_channels``). v1 and v2 names are both understood. Anything else --
random augmentations, ``Lambda``, unknown classes -- is refused with its name: a transform the
server cannot reproduce must not be dropped silently.

Where a step runs matters: torchvision resizes a PIL image with Pillow (the server does the
same), but a tensor (after ``ToTensor``/``ToImage``) with torch's own kernels. Those follow
Pillow's antialiased filters for bilinear/bicubic but are not bit-identical, so a tensor-stage
``Resize`` is accepted with a manifest note; where torch's kernel differs by design (legacy
``nearest``, ``antialias=False``) it is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from packserve.errors import PackError

SUPPORTED = ("Compose, Resize, CenterCrop, Grayscale(1), ToTensor, PILToTensor, ToImage, "
             "ToPureTensor, ConvertImageDtype, ToDtype, Normalize")
#: Pillow's integer resampling constants, which old torchvision code passes as interpolation
_PIL_INTS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_TENSOR_MODES = frozenset({"bilinear", "bicubic", "nearest-exact"})
_DTYPES = {"float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
           "uint8": "uint8"}


@dataclass
class Translation:
    """The spec fields (``input`` left to the caller) and notes for the manifest."""

    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def is_transform(obj: Any) -> bool:
    """Whether ``preprocess=`` looks like a torchvision transform pipeline, not a mapping."""
    return hasattr(obj, "transforms") or type(obj).__name__ in _HANDLERS


def _flatten(obj: Any) -> list[Any]:
    if type(obj).__name__ == "Compose":
        steps: Iterable[Any] = obj.transforms
        return [t for s in steps for t in _flatten(s)]
    return [obj]


def _size(value: Any, what: str) -> int | tuple[int, int]:
    """torchvision's sizes: an int or ``[n]`` (one number), or ``(h, w)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        if len(value) == 1:
            return int(value[0])
        if len(value) == 2:
            return int(value[0]), int(value[1])
    raise PackError(f"preprocess: {what} size {value!r} is not an int or (height, width)")


def _interpolation(value: Any) -> str:
    if isinstance(value, int) and value in _PIL_INTS:
        return _PIL_INTS[value]
    name = getattr(value, "value", value)  # torchvision's InterpolationMode enum
    if isinstance(name, str):
        return name.lower()
    raise PackError(f"preprocess: Resize interpolation {value!r} is not understood")


def _dtype(value: Any, what: str) -> str:
    if isinstance(value, dict):  # v2 ToDtype({tv_tensors.Image: dtype, "others": None})
        images = [v for k, v in value.items() if getattr(k, "__name__", k) == "Image"]
        if len(images) != 1:
            raise PackError(f"preprocess: {what} with a dtype mapping needs an Image entry")
        value = images[0]
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise PackError(f"preprocess: {what}({name}) -- the image tensor may be float32, "
                        "float16 or uint8")
    return _DTYPES[name]


class _State:
    """What the steps so far amount to, and where the image is (PIL, uint8 or float tensor)."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] = {"layout": "NCHW", "scale": False}
        self.stage = "pil"
        self.notes: list[str] = []

    def need(self, stage: str, name: str, why: str) -> None:
        if self.stage != stage:
            raise PackError(f"preprocess: {name} {why}")

    def before_normalize(self, name: str) -> None:
        if "mean" in self.spec:
            raise PackError(f"preprocess: {name} after Normalize is not supported "
                            "(the server resizes and crops before normalising)")


def _resize(t: Any, st: _State) -> None:
    st.before_normalize("Resize")
    if "resize" in st.spec or "crop" in st.spec:
        raise PackError("preprocess: Resize after another Resize or a CenterCrop is not "
                        "supported (the server resizes once, then crops)")
    if getattr(t, "max_size", None) is not None:
        raise PackError("preprocess: Resize(max_size=...) is not supported")
    size = getattr(t, "size", None)
    if size is None:
        raise PackError("preprocess: Resize without a size is not supported")
    mode = _interpolation(getattr(t, "interpolation", "bilinear"))
    if st.stage == "pil":  # torchvision hands a PIL image to Pillow: always antialiased
        mode = "nearest" if mode == "nearest-exact" else mode
    else:
        if mode not in _TENSOR_MODES:
            raise PackError(f"preprocess: Resize({mode}) on a tensor uses torch's kernel, "
                            "which differs from Pillow's; move Resize before ToTensor/ToImage "
                            "or use nearest-exact, bilinear or bicubic")
        if mode != "nearest-exact" and getattr(t, "antialias", True) is not True:
            raise PackError("preprocess: Resize(antialias=False) on a tensor is not "
                            "implemented (the server resizes with Pillow, always antialiased)")
        mode = "nearest" if mode == "nearest-exact" else mode
        st.notes.append(
            f"preprocess: Resize runs on a tensor in the torchvision pipeline (torch's {mode} "
            "kernel); the server resizes the 8-bit image with Pillow's, which torch's "
            "antialiased kernels follow but not bit for bit")
    st.spec.update(resize=_size(size, "Resize"), interpolation=mode, antialias=True)


def _crop(t: Any, st: _State) -> None:
    st.before_normalize("CenterCrop")
    if "crop" in st.spec:
        raise PackError("preprocess: a second CenterCrop is not supported")
    size = _size(getattr(t, "size", None), "CenterCrop")
    st.spec["crop"] = (size, size) if isinstance(size, int) else size


def _grayscale(t: Any, st: _State) -> None:
    st.need("pil", "Grayscale", "after a tensor conversion is not supported (put it first)")
    if getattr(t, "num_output_channels", 1) != 1:
        raise PackError("preprocess: Grayscale(num_output_channels=3) is not supported")
    st.spec["mode"] = "L"


def _to_tensor(t: Any, st: _State) -> None:
    st.need("pil", "ToTensor", "needs a PIL image (it comes after another tensor conversion)")
    st.stage = "float"
    st.spec.update(scale=True, dtype="float32")


def _to_uint8(t: Any, st: _State) -> None:
    name = type(t).__name__
    st.need("pil", name, "needs a PIL image (it comes after another tensor conversion)")
    st.stage = "uint8"


def _to_dtype(t: Any, st: _State) -> None:
    name = type(t).__name__
    if st.stage == "pil":
        raise PackError(f"preprocess: {name} needs a tensor (add ToTensor/ToImage before it)")
    dtype = _dtype(getattr(t, "dtype", None), name)
    scale = name == "ConvertImageDtype" or bool(getattr(t, "scale", False))
    if dtype == "uint8":
        if st.stage != "uint8":
            raise PackError(f"preprocess: {name}(uint8) after a float conversion is not supported")
        return
    if st.stage == "uint8":
        st.spec["scale"] = scale
    st.stage = "float"
    st.spec["dtype"] = dtype


def _normalize(t: Any, st: _State) -> None:
    st.need("float", "Normalize", "needs a float tensor (ToTensor or ToDtype(float32) first)")
    if "mean" in st.spec:
        raise PackError("preprocess: a second Normalize is not supported")
    st.spec["mean"] = [float(v) for v in t.mean]
    st.spec["std"] = [float(v) for v in t.std]


def _no_op(t: Any, st: _State) -> None:
    """ToPureTensor: drops the tv_tensors wrapper, the pixels are unchanged."""


_HANDLERS: dict[str, Callable[[Any, _State], None]] = {
    "Resize": _resize, "CenterCrop": _crop, "Grayscale": _grayscale, "ToTensor": _to_tensor,
    "PILToTensor": _to_uint8, "ToImage": _to_uint8, "ToImageTensor": _to_uint8,
    "ConvertImageDtype": _to_dtype, "ToDtype": _to_dtype, "Normalize": _normalize,
    "ToPureTensor": _no_op,
}


def _refuse(t: Any) -> PackError:
    name = type(t).__name__
    if name.startswith("Random") or name in ("AutoAugment", "RandAugment", "TrivialAugmentWide",
                                             "AugMix", "ColorJitter", "GaussianBlur"):
        why = "a training-time augmentation; pass the evaluation transforms"
    elif name == "Lambda":
        why = "arbitrary code that cannot be recorded in a bundle"
    else:
        why = "not supported"
    return PackError(f"preprocess: transform {name} is {why} (supported: {SUPPORTED})")


def translate(pipeline: Any) -> Translation:
    """A torchvision ``Compose`` (or a single transform) -> spec fields and notes."""
    st = _State()
    for t in _flatten(pipeline):
        handler = _HANDLERS.get(type(t).__name__)
        if handler is None:
            raise _refuse(t)
        handler(t, st)
    if st.stage == "pil":
        raise PackError("preprocess: the transforms end with a PIL image; add ToTensor(), "
                        "PILToTensor() or ToImage()")
    if st.stage == "uint8":
        st.spec["dtype"] = "uint8"
    return Translation(spec=st.spec, notes=st.notes)


__all__ = ["SUPPORTED", "Translation", "is_transform", "translate"]

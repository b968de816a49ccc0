"""Stand-ins for torchvision's transform classes, for the Compose translation tests (#17).

torchvision cannot be installed beside torch 2.13 (CPU) in this project's environment: it fails
to import. These classes mirror torchvision's *public attributes* -- the class names and the
documented attribute names and values each constructor stores (v1 ``Resize`` keeps ``size`` as
given, v2 ``Resize`` keeps ``[size]`` for an int; ``CenterCrop`` keeps ``(h, w)``;
``InterpolationMode`` is an enum of strings; ``dtype`` is a real ``torch.dtype``) -- which is
all packserve's translation reads. They carry no pixel behaviour; the pixel semantics are
checked against the real torchvision in ``test_transforms.py`` wherever it imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


class Compose:
    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms


class Resize:  # torchvision.transforms.Resize
    def __init__(self, size: int | Sequence[int],
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR,
                 max_size: int | None = None, antialias: bool | None = True) -> None:
        self.size = size
        self.interpolation = interpolation
        self.max_size = max_size
        self.antialias = antialias


class CenterCrop:
    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _hw(size)


class ToTensor:
    pass


class PILToTensor:
    pass


class ConvertImageDtype:
    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean = mean
        self.std = std
        self.inplace = inplace


class Grayscale:
    def __init__(self, num_output_channels: int = 1) -> None:
        self.num_output_channels = num_output_channels


class Lambda:
    def __init__(self, lambd: Any) -> None:
        self.lambd = lambd


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p


class v2:  # noqa: N801 - torchvision.transforms.v2, as a namespace
    """The v2 API: ``Resize`` keeps ``size`` as a list; ``ToImage``/``ToDtype``."""

    class Compose(Compose):
        pass

    class Resize(Resize):
        def __init__(self, size: int | Sequence[int], **kw: Any) -> None:
            super().__init__([size] if isinstance(size, int) else list(size), **kw)

    class CenterCrop(CenterCrop):
        pass

    class Normalize(Normalize):
        def __init__(self, mean: Sequence[float], std: Sequence[float],
                     inplace: bool = False) -> None:
            super().__init__(list(mean), list(std), inplace)

    class ToImage:
        pass

    class ToPureTensor:
        pass

    class ToDtype:
        def __init__(self, dtype: Any, scale: bool = False) -> None:
            self.dtype = dtype
            self.scale = scale


__all__ = ["CenterCrop", "Compose", "ConvertImageDtype", "Grayscale", "InterpolationMode",
           "Lambda", "Normalize", "PILToTensor", "RandomHorizontalFlip", "Resize", "ToTensor",
           "v2"]

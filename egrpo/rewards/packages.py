"""The official reward packages that go in with `pip install --no-deps` (their own pins, pytest 7.2,
protobuf < 4 and timm 0.6, conflict with open_clip and transformers 5): one source for their pins and
for the one-line error naming the command when one is missing."""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import InputError

NO_DEPS = ("hpsv2x==1.2.0", "image-reward==1.5")
INSTALL = "pip install --no-deps " + " ".join(NO_DEPS)
MODULES = {"hpsv2": "hpsv2x", "ImageReward": "image-reward"}  # import name -> distribution


def missing(module: str) -> InputError:
    return InputError(f"the official reward package {MODULES[module]} is not installed (module {module}): {INSTALL}")


@contextmanager
def official(module: str):
    """Imports of `module` inside the block: its absence is the one-line error; a module it imports
    that is missing is not (that is a broken install, reported as it is)."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != module:
            raise
        raise missing(module) from None

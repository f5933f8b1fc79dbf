"""User-facing errors (importable without torch, so the CLI reports them fast and in one line)."""


class ConfigError(ValueError):
    """Invalid configuration; the message names the key."""


class WeightsMissingError(FileNotFoundError):
    """A weight directory is absent or incomplete; the message names the path, the missing part and
    how to obtain it."""


class InputError(ValueError):
    """An input file is missing, empty, unreadable or malformed; the message names the file and what to do."""


class DeviceError(RuntimeError):
    """The job cannot use the device it was given or asked for (e.g. GPUs that torch cannot see)."""


class TrainingError(RuntimeError):
    """A run cannot go on (NaN/inf reward, loss or gradient); the last checkpoint is left intact."""


class NonFiniteRewardError(RuntimeError):
    """A scorer returned NaN/inf."""

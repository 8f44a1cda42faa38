"""The project's own error types. The CLI prints their message on one line and exits with status 2."""


class ChainruleError(Exception):
    """Base of every error caused by the user's input (data, config, files, arguments)."""


class DataError(ChainruleError, ValueError):
    """A data file or array is unusable; the message names the file, row and column."""


class ConfigError(ChainruleError, ValueError):
    """A model spec, config file or command-line option is invalid; the message names the key."""


class ModelFileError(ChainruleError, ValueError):
    """A saved model, checkpoint or run directory is missing, corrupt or does not fit the model."""


class TrainingError(ChainruleError, RuntimeError):
    """Training cannot go on (a NaN or infinite loss, a locked run directory)."""


class AnomalyError(TrainingError):
    """detect_anomaly() found an op whose forward result or gradient holds NaN or Inf; names the op and where."""

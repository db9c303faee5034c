"""A checkpoint directory's files and its config.json, read without torch.

checkpoint.py builds the model from them; processes that need only the stored settings (the
simulation bridge and `mvp demo` read `env_args` and `contract`) use `read_checkpoint_document`.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import __version__

FORMAT = "mvp_ros.policy"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded, with the file and the reason."""


def read_checkpoint_document(directory: str | Path) -> dict:
    """config.json of the checkpoint in `directory`, checked to be an mvp_ros checkpoint of this format version."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} is missing: a checkpoint needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        document = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error}); the file is corrupted or truncated") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not an mvp_ros policy checkpoint (format {document.get('format')!r}"
                              f" where {FORMAT!r} was expected)" if isinstance(document, dict)
                              else f"{config_path} is not an mvp_ros policy checkpoint")
    version = document.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{config_path} has format_version {version!r}; this mvp_ros ({__version__}) reads version "
            f"{FORMAT_VERSION}" + ("; upgrade mvp_ros to load it" if newer else ""))
    for key in ("policy", "normalization", "weights_sha256"):
        if key not in document:
            raise CheckpointError(f"{config_path} lacks the {key!r} entry")
    return document

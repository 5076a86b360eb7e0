"""Local paths named by a recipe (checkpoints, tokenizers, data files, resumed runs) must exist; Hub ids
(``name``, ``org/name[@revision]``) and URLs pass through, to be resolved when they load."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..checkpoints import check_checkpoint
from ..errors import InputError
from .engine import error, show

if TYPE_CHECKING:
    from .schema import Recipe


def looks_local(text: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with a path shape is meant as a local path."""
    return (text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..")
            or text.count("/") >= 2 or "\\" in text)


def exists(text: str, kind: Literal["any", "file", "dir", "glob"] = "any") -> bool:
    try:
        path = Path(text).expanduser()
        if kind == "glob":
            return bool(glob.glob(str(path)))
        return {"any": path.exists, "file": path.is_file, "dir": path.is_dir}[kind]()
    except (OSError, ValueError, RuntimeError):  # NUL bytes, over-long names, unknown ~user: no such path
        return False


def check_model_path(text: str, key: str, where: str) -> None:
    if exists(text):
        if key == "model.name_or_path" and Path(text).is_dir() and not (Path(text) / "config.json").is_file() \
                and not (Path(text) / "adapter_config.json").is_file():
            raise error(where, key, f"{show(text)} holds no config.json; expected a saved model checkpoint "
                         "(a folder written by save_pretrained or hfpipe)")
        try:
            check_checkpoint(text)  # a file, a truncated safetensors, an adapter whose base is gone
        except InputError as problem:
            raise error(where, key, str(problem)) from problem
        return
    base = text.rsplit("@", 1)[0] if "@" in text else text  # "org/name@revision"
    if looks_local(base) and not exists(base):
        raise error(where, key, f"no such directory {show(base)} (a local path; Hub ids look like org/name)")


def check_data_file(text: str, key: str, where: str) -> None:
    if "://" in text:  # a remote URL (hf://, https://): datasets resolves it
        return
    if glob.has_magic(text):
        if not exists(text, "glob"):
            raise error(where, key, f"no file matches {show(text)}")
    elif not exists(text, "any"):  # a folder stands for the files under it (data.sources._expand)
        raise error(where, key, f"no such file {show(text)}")


def validate_paths(r: Recipe, where: str) -> None:
    for section in ("model", "tokenizer"):
        value = getattr(r, section).name_or_path
        if value is not None:
            check_model_path(value, f"{section}.name_or_path", where)
    for key in ("train_files", "validation_files"):
        for i, name in enumerate(getattr(r.data, key)):
            check_data_file(name, f"data.{key}[{i}]", where)
    resume = r.train.resume
    if isinstance(resume, str) and not exists(resume, "dir") and looks_local(resume.rsplit("@", 1)[0]):
        raise error(where, "train.resume",
                     f"no such checkpoint directory {show(resume)} (or true, or a Hub id org/name[@revision])")

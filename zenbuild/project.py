"""The front door: find the project, import ``module:attr``, convert params, bind. Every command
and the Python API (``pipeline().run()``) come in here."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from zenbuild.config import Config, find_project, load_config, resolve_pipeline_spec
from zenbuild.errors import ParamError, PipelineError

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.dsl import BoundPipeline, Pipeline
    from zenbuild.result import RunResult


def load_project(project_dir: Optional[str] = None) -> Config:
    """Find zenbuild.toml (walking up from ``project_dir`` or the cwd) and load it."""
    start = os.path.abspath(project_dir or os.getcwd())
    if project_dir is not None and not os.path.isdir(start):
        from zenbuild.errors import ConfigError

        raise ConfigError(f"--project-dir {project_dir}: no such folder")
    if project_dir is not None and os.path.isfile(os.path.join(start, "zenbuild.toml")):
        return load_config(start, os.path.join(start, "zenbuild.toml"))
    root, source = find_project(start)
    return load_config(root, source)


def _user_traceback(e: BaseException) -> str:
    import traceback

    here = os.path.dirname(os.path.abspath(__file__))
    frames = [
        f
        for f in traceback.extract_tb(e.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith(here) and "<frozen" not in f.filename
    ]
    text = "".join(traceback.format_list(frames)) if frames else ""
    return text + "".join(traceback.format_exception_only(type(e), e))


def import_object(config: Config, spec: str) -> Any:
    """Import ``module:attribute`` with the project root first on sys.path."""
    if ":" not in spec:
        raise PipelineError(f"{spec!r} is not of the form module:attribute")
    mod_name, attr = spec.split(":", 1)
    if config.root in sys.path:
        sys.path.remove(config.root)
    sys.path.insert(0, config.root)
    try:
        module = importlib.import_module(mod_name)
    except SyntaxError as e:
        where = os.path.relpath(e.filename, config.root) if e.filename else mod_name
        raise PipelineError(
            f"cannot import {mod_name}: syntax error in {where} line {e.lineno}: {e.msg}.\n"
            f"    {(e.text or '').strip()}"
        ) from None
    except ModuleNotFoundError as e:
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise PipelineError(
                f"cannot import {mod_name}: no module named {e.name!r} under the project root "
                f"{config.root} or on sys.path. Check the pipeline's module:attribute."
            ) from None
        raise PipelineError(f"importing {mod_name} failed:\n{_user_traceback(e)}") from None
    except Exception as e:
        raise PipelineError(f"importing {mod_name} failed:\n{_user_traceback(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PipelineError(f"module {mod_name} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def load_pipeline(config: Config, name: Optional[str]) -> Tuple[str, Pipeline]:
    from zenbuild.dsl import BoundPipeline, Pipeline

    spec = resolve_pipeline_spec(config, name)
    obj = import_object(config, spec)
    if isinstance(obj, BoundPipeline):
        obj = obj.pipeline
    if not isinstance(obj, Pipeline):
        raise PipelineError(
            f"{spec} is a {type(obj).__name__}, not a pipeline; decorate the function with @pipeline"
        )
    return spec, obj


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def convert_param(name: str, raw: str, annotation: Any) -> Any:
    """Convert a --param string by the parameter's annotation, else as a TOML literal."""
    ann = annotation
    if isinstance(ann, str):
        ann = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path,
               "pathlib.Path": Path}.get(ann.replace("Optional[", "").rstrip("]"), ann)
    try:
        if ann is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true or false")
        if ann in (int, float, str):
            return ann(raw)
        if isinstance(ann, type) and issubclass(ann, PurePath):
            return ann(raw)
    except ValueError as e:
        tname = getattr(ann, "__name__", str(ann))
        raise ParamError(f"--param {name}={raw}: cannot convert to {tname} ({e})") from None
    from zenbuild.config import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_cli_params(pipe: Pipeline, pairs: List[str]) -> Dict[str, Any]:
    layout = pipe.params
    names = [n for n in layout.names if n not in (layout.varargs, layout.varkw)]
    out: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ParamError(f"--param {pair!r}: expected KEY=VALUE")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in names and not layout.varkw:
            known = ", ".join(names) or "none"
            raise ParamError(
                f"--param {key}: pipeline {pipe.name} has no parameter {key!r} (parameters: {known})"
            )
        ann = layout.annotations.get(key) if key in names else None
        if ann is None and key in layout.defaults:
            d = layout.defaults[key]
            ann = type(d) if isinstance(d, (bool, int, float, str, PurePath)) else None
        out[key] = convert_param(key, raw, ann)
    return out


def bind_pipeline(pipe: Pipeline, config: Config, explicit: Dict[str, Any]) -> BoundPipeline:
    """Bind with precedence: function defaults < zenbuild.toml [params] < explicit values."""
    from zenbuild.dsl import BoundPipeline

    names = pipe.params.names
    merged = {k: v for k, v in config.params.items() if k in names}
    merged.update(explicit)
    return BoundPipeline(pipe, (), merged)


def run_from_api(
    bound: BoundPipeline, project_dir: Optional[Any] = None, **options: Any
) -> RunResult:
    """``BoundPipeline.run()``: find the project, let [params] fill what the call left
    unset, and run."""
    from zenbuild.run import run_bound

    config = load_project(os.fspath(project_dir) if project_dir is not None else None)
    explicit = {k: bound.arguments[k] for k in bound.explicit}
    bound = bind_pipeline(bound.pipeline, config, explicit)  # [params] fill the rest
    return run_bound(bound, config=config, **options)

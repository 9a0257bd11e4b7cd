"""zenbuild: an incremental runner for Python pipelines. Public API only."""

from zenbuild.dsl import (
    BoundPipeline,
    Dir,
    Env,
    File,
    Output,
    Pipeline,
    Step,
    no_cache,
    pipeline,
    step,
)
from zenbuild.errors import (
    ConfigError,
    PathError,
    PipelineError,
    StepFailed,
    StoreError,
    ZenbuildError,
)
from zenbuild.result import RunResult, StepResult
from zenbuild.serialize import register_value_type
from zenbuild.serialize.materialize import value_type

__version__ = "0.1.0"

__all__ = [
    "BoundPipeline",
    "ConfigError",
    "Dir",
    "Env",
    "File",
    "Output",
    "PathError",
    "Pipeline",
    "PipelineError",
    "RunResult",
    "Step",
    "StepFailed",
    "StepResult",
    "StoreError",
    "ZenbuildError",
    "no_cache",
    "pipeline",
    "register_value_type",
    "step",
    "value_type",
]

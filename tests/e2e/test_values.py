"""End-to-end: values through the real CLI: stable digests across hash seeds and checkout
paths (torch, pydantic, sets in objects, OmegaConf, Path params), numpy scalar types kept,
call ids that survive a change of the pipeline's shape, handles refused as strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TICK, Project

# Each producer is @no_cache, so it executes on every run: its consumer stays cached only
# if the producer's value gets the same digest as in the first run (early cutoff). The
# second run is in another checkout under another hash seed.
VALUES = '''
import types
from pathlib import Path

import numpy as np
import pydantic
import torch
from omegaconf import OmegaConf
from zenbuild import no_cache, pipeline, step
from ticker import tick

ROOT = Path(__file__).resolve().parent


class Settings(pydantic.BaseModel):
    lr: float
    tags: set = set()


@step
@no_cache
def make_tensor():
    torch.manual_seed(0)
    return torch.randn(3, 4)[:, 1:]


@step
def use_tensor(t) -> float:
    tick("use_tensor")
    return float(t.sum())


@step
@no_cache
def make_module():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


@step
def use_module(m, t) -> list:
    tick("use_module")
    assert isinstance(m, torch.nn.Linear), type(m)
    return m(t).detach().tolist()


@step
@no_cache
def make_state():
    torch.manual_seed(1)
    return torch.nn.Linear(3, 2).state_dict()


@step
def use_state(sd) -> list:
    tick("use_state")
    return sorted(sd)


@step
@no_cache
def make_model():
    return Settings(lr=0.1, tags={"alpha", "beta", "gamma", "delta", "eps"})


@step
def use_model(s) -> float:
    tick("use_model")
    assert isinstance(s, Settings) and s.tags == {"alpha", "beta", "gamma", "delta", "eps"}
    return s.lr


@step
@no_cache
def make_ns():
    return types.SimpleNamespace(labels={"cat", "dog", "emu", "fox", "gnu"},
                                 frozen=frozenset({"x1", "y2", "z3"}))


@step
def use_ns(ns) -> list:
    tick("use_ns")
    return sorted(ns.labels)


@step
@no_cache
def make_cfg():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("train")


@step
def use_cfg(cfg) -> float:
    tick("use_cfg")
    return cfg.lr


@step
def read_path(p: Path) -> str:
    tick("read_path")
    return p.read_text()


@step
@no_cache
def metrics() -> dict:
    return {"acc": np.float32(0.1), "n": np.int64(7), "arr": np.arange(3, dtype=np.int16)}


@step
def check_metrics(m) -> str:
    tick("check_metrics")
    assert type(m["acc"]) is np.float32, type(m["acc"])
    assert type(m["n"]) is np.int64, type(m["n"])
    assert m["arr"].dtype == np.int16, m["arr"].dtype
    return f"{m['acc'].dtype} {m['n'].dtype}"


@pipeline
def values():
    t = make_tensor()
    use_tensor(t)
    use_module(make_module(), t)
    use_state(make_state())
    use_model(make_model())
    use_ns(make_ns())
    use_cfg(make_cfg())
    read_path(ROOT / "data.txt")
    check_metrics(metrics())
'''

CONSUMERS = ["use_tensor", "use_module", "use_state", "use_model", "use_ns", "use_cfg",
             "read_path", "check_metrics"]
PRODUCERS = ["make_tensor", "make_module", "make_state", "make_model", "make_ns", "make_cfg",
             "metrics"]


def _values_project(root: Path, store: Path) -> Project:
    root.mkdir(parents=True)
    p = Project(root)
    p.write("ticker.py", TICK)
    p.write("zenbuild.toml", f'pipelines = ["values:values"]\nstore = "{store}"\n')
    p.write("values.py", VALUES)
    p.write("data.txt", "hello\n")
    # ${now:...} puts the time of day into the config's resolver cache when resolved
    p.write("conf/train.yaml", "lr: 0.1\nrun_dir: out/${now:%H-%M-%S-%f}\n")
    return p


def test_values_keep_their_digest_across_hash_seeds_and_checkouts(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the dev extra installs it on x86_64 only
    store = tmp_path / "shared-store"
    a = _values_project(tmp_path / "a" / "proj", store)
    r = a.run("run", env={"PYTHONHASHSEED": "1"})
    assert sorted(a.ticks()) == sorted(CONSUMERS), r
    assert "Step check_metrics has finished" in r.output

    b = Project(tmp_path / "b" / "checkout")
    shutil.copytree(a.root, b.root)
    r = b.run("run", "--explain", env={"PYTHONHASHSEED": "2"})
    assert sorted(r.executed) == sorted(PRODUCERS), r  # @no_cache: they always execute
    assert b.ticks() == [], r  # every consumer got the same value digest: nothing reran
    assert sorted(r.cached) == sorted(CONSUMERS), r


def test_numpy_scalars_keep_their_type_through_the_store(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the dev extra installs it on x86_64 only
    p = _values_project(tmp_path / "proj", tmp_path / "store")
    r = p.run("run")
    assert "check_metrics" in p.ticks() and "check_metrics" in r.executed  # a fresh run
    r = p.run("run", "--explain")  # producers re-execute, consumers are served from the store
    assert p.ticks() == []
    assert "check_metrics" in r.cached


IDS = '''
from zenbuild import pipeline, step
from ticker import tick


@step
def scale(x: int, k: int) -> int:
    tick(f"scale:{x}x{k}")
    return x * k


@pipeline
def shapes(extra: bool = False):
    if extra:
        scale(1, 1)
    scale(2, 10, id="scale_fast")
    scale(3, 100)
'''


def test_call_ids_stay_when_the_pipeline_changes_shape(project: Project) -> None:
    # [steps.scale_fast] must keep hitting the call with that id
    project.write("zenbuild.toml", 'pipelines = ["ids:shapes"]\n'
                  '[steps.scale_fast]\nenable_cache = false\n')
    project.write("ids.py", IDS)
    r = project.run("run")
    assert sorted(r.executed) == ["scale", "scale_fast"]
    assert sorted(project.ticks()) == ["scale:2x10", "scale:3x100"]
    r = project.run("run")
    assert r.executed == ["scale_fast"] and project.ticks() == ["scale:2x10"]
    r = project.run("run", "-p", "extra=true")
    # the new call takes the automatic name scale, so the old scale becomes scale_2 (same
    # key: served from the store); the call with an id keeps its name and its setting
    assert sorted(r.executed) == ["scale", "scale_fast"], r
    assert sorted(project.ticks()) == ["scale:1x1", "scale:2x10"]
    assert r.cached == ["scale_2"]
    r = project.run("explain", "scale_fast", "-p", "extra=true")
    assert "caching disabled by zenbuild.toml [steps.scale_fast] enable_cache = false" \
        in r.stdout, r  # the setting follows the id


def test_duplicate_call_id_is_a_usage_error(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["ids:shapes"]\n')
    project.write("ids.py", IDS.replace('scale(3, 100)', 'scale(3, 100, id="scale_fast")'))
    r = project.run("run", check=2)
    assert "the call id 'scale_fast' is given twice" in r.stderr
    assert "Traceback" not in r.output
    project.write("ids.py", IDS.replace('id="scale_fast"', 'id="scale_2"'))
    project.write("zenbuild.toml", 'pipelines = ["ids:shapes"]\n')
    r = project.run("run", "-p", "extra=true", check=2)
    assert "'scale_2'" in r.stderr and "automatic name" in r.stderr
    assert project.ticks() == []


FSTRING = '''
from zenbuild import Output, pipeline, step
from ticker import tick


@step
def pick_name() -> str:
    tick("pick_name")
    return "alpha"


@step
def save(label: str, out: Output) -> None:
    tick("save")
    out.write_text(label)


@pipeline
def naming():
    n = pick_name()
    save(f"run-{n}", Output("build/x.txt"))
'''


def test_handle_in_an_f_string_is_a_usage_error(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["naming:naming"]\n')
    project.write("naming.py", FSTRING)
    r = project.run("run", check=2)
    assert "the output of step pick_name was used as a string" in r.stderr, r
    assert "naming.py:21" in r.stderr, r  # the f-string's line
    assert "a step that builds the string" in r.stderr
    assert "Traceback" not in r.output
    assert project.ticks() == []
    assert not (project.root / "build").exists()
    for bad in ('str(n)', '"run-%s" % n', '"run-{}".format(n)'):
        project.write("naming.py", FSTRING.replace('f"run-{n}"', bad))
        r = project.run("run", check=2)
        assert "was used as a string" in r.stderr, (bad, r)
    project.write("naming.py", FSTRING.replace('save(f"run-{n}", Output("build/x.txt"))',
                                               'save("x", Output(n))'))
    r = project.run("run", check=2)
    assert "was used as a path" in r.stderr, r



META = '''
import numpy as np
from zenbuild import Output, pipeline, step
from ticker import tick

MAPPING = {"RED": 0, "GREEN": 1}


@step
def labels():
    dt = np.dtype("i1", metadata={"enum": MAPPING})  # what h5py.enum_dtype makes
    return np.array([0, 1, 1], dtype=dt)


@step
def names(a, out: Output) -> None:
    tick("names")
    back = {v: k for k, v in a.dtype.metadata["enum"].items()}
    out.write_text(" ".join(back[int(x)] for x in a))


@pipeline
def p():
    names(labels(), Output("build/names.txt"))
'''


def test_an_arrays_dtype_metadata_is_kept_and_is_part_of_its_digest(project: Project) -> None:
    """dtype.str alone lost the metadata: the consumer got an array without it (a KeyError
    here), and a change of only the metadata kept the digest, so the consumer was served
    stale."""
    project.write("pipe.py", META)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    assert project.ticks() == ["names"]
    assert project.read("build/names.txt") == "RED GREEN GREEN"
    project.write("pipe.py", META.replace('{"RED": 0, "GREEN": 1}', '{"GREEN": 0, "RED": 1}'))
    project.run("run")
    assert project.ticks() == ["names"]
    assert project.read("build/names.txt") == "GREEN RED RED"
    project.run("run")
    assert project.ticks() == []


PADDED = '''
import os
import numpy as np
from zenbuild import no_cache, pipeline, step
from ticker import tick

ALIGNED = np.dtype([("flag", "i1"), ("price", "f8")], align=True)  # 7 padding bytes an item


def reused(dtype, n):
    """n items of ``dtype`` in memory that held something else before (random bytes), as a
    reused allocation does: only the padding bytes keep them once the values are set."""
    return np.frombuffer(bytearray(os.urandom(n * np.dtype(dtype).itemsize)), dtype=dtype)


@no_cache
@step
def fetch_ld():
    a = reused(np.longdouble, 8)  # 10 bytes of value in 16 on x86-64
    a[:] = np.arange(8) * 1.5
    return a


@no_cache
@step
def fetch_records():
    r = reused(ALIGNED, 8)
    r["flag"] = 1
    r["price"] = np.arange(8) / 4
    return {"records": r, "first": r[0], "scale": np.longdouble(2) / 3, "tag": object}


@step
def mean(x) -> float:
    tick("mean")
    assert x.dtype == np.longdouble
    return float(x.mean())


@step
def total(d) -> float:
    tick("total")
    assert d["records"].dtype == ALIGNED
    return float(d["records"]["price"].sum() * d["scale"])


@pipeline
def p():
    mean(fetch_ld())
    total(fetch_records())
'''


@pytest.mark.skipif(np.finfo(np.longdouble).nmant != 63 or np.dtype(np.longdouble).itemsize <= 10,
                    reason="np.longdouble has no padding here (not x86's 80-bit extended float)")
def test_a_consumer_of_a_padded_array_stays_cached_when_its_no_cache_producer_reruns(
        project: Project) -> None:
    """An np.longdouble array and an aligned structured array hold padding bytes that no
    value sets: they were part of the digest, so the @no_cache producer's equal value had a
    new digest on every run and its consumers ran every time (early cutoff lost), and a
    --no-cache run warned that the step was not deterministic."""
    project.write("pipe.py", PADDED)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    r = project.run("run")
    assert sorted(r.executed) == ["fetch_ld", "fetch_records", "mean", "total"]
    assert sorted(project.ticks()) == ["mean", "total"]
    r = project.run("run")
    assert sorted(r.executed) == ["fetch_ld", "fetch_records"]
    assert sorted(r.cached) == ["mean", "total"] and project.ticks() == []
    r = project.run("run", "--no-cache")
    assert "not deterministic" not in r.output, r
    r = project.run("run", "--no-cache")
    assert "not deterministic" not in r.output, r


NAN_SIGN = '''
import math
import struct
from zenbuild import pipeline, step
from ticker import tick

SIGN = -1.0


@step
def produce() -> list:
    return [math.copysign(float("nan"), SIGN), complex(1.0, math.copysign(float("nan"), SIGN))]


@step
def consume(v: list) -> str:
    tick("consume")
    return f"{math.copysign(1.0, v[0])} {math.copysign(1.0, v[1].imag)}"


@step
def show(text: str) -> None:
    from pathlib import Path
    Path(__file__).resolve().parent.joinpath("sign.txt").write_text(text)


@pipeline
def p():
    show(consume(produce()))
'''


def test_a_nans_sign_reaches_the_consumer_and_its_change_reruns_it(project: Project) -> None:
    """Every NaN was encoded as nan: the consumer of -nan got +nan, and an edit of the
    producer from -nan to +nan kept the consumer cached with its old result."""
    project.write("pipe.py", NAN_SIGN)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    assert project.ticks() == ["consume"] and project.read("sign.txt") == "-1.0 -1.0"
    project.write("pipe.py", NAN_SIGN.replace("SIGN = -1.0", "SIGN = 1.0"))
    project.run("run")
    assert project.ticks() == ["consume"] and project.read("sign.txt") == "1.0 1.0"
    project.run("run")
    assert project.ticks() == []

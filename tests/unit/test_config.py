"""config: zenbuild.toml and [tool.zenbuild], with errors naming file, key and line."""

from __future__ import annotations

import pytest

from zenbuild.config import find_project, load_config, resolve_pipeline_spec
from zenbuild.errors import ConfigError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_and_values(tmp_path):
    src = write(tmp_path, "zenbuild.toml", '''
pipelines = ["a.b:p", "c:q"]
store = "cache/zb"
jobs = 2
[params]
top = 5
[steps.count]
enable_cache = false
[fingerprint]
packages = false
''')
    c = load_config(str(tmp_path), src)
    assert c.pipelines == ("a.b:p", "c:q")
    assert c.store == str(tmp_path / "cache/zb")
    assert c.params == {"top": 5} and c.jobs == 2 and c.track_packages is False
    assert c.step_settings("count", "count").enable_cache is False
    assert c.step_settings("count_2", "count").enable_cache is False
    assert resolve_pipeline_spec(c, None) == "a.b:p"
    assert resolve_pipeline_spec(c, "q") == "c:q"
    assert resolve_pipeline_spec(c, "x.y:z") == "x.y:z"
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        resolve_pipeline_spec(c, "nope")


@pytest.mark.parametrize("text,message", [
    ('pipelines = ["a:b"]\nstroe = "x"\n', "zenbuild.toml:2: stroe: unknown key"),
    ('jobs = "4"\n', "zenbuild.toml:1: jobs: expected an integer"),
    ('jobs = true\n', "jobs: expected an integer"),
    ('pipelines = ["nocolon"]\n', 'each entry must be "module:attribute"'),
    ('[steps.a]\nenable_cache = "no"\n', "zenbuild.toml:2: steps.a.enable_cache: expected true or false"),
    ('[watch]\non_busy = "later"\n', 'watch.on_busy: expected "queue" or "restart"'),
    ('pipelines = [\n', "invalid TOML"),
])
def test_errors_name_file_key_and_line(tmp_path, text, message):
    src = write(tmp_path, "zenbuild.toml", text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(str(tmp_path), src)


def test_pyproject_table_and_project_discovery(tmp_path):
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\n\n[tool.zenbuild]\npipelines = ["m:p"]\nbogus = 1\n')
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    root, source = find_project(str(tmp_path / "sub" / "deeper"))
    assert root == str(tmp_path) and source.endswith("pyproject.toml")
    with pytest.raises(ConfigError, match="pyproject.toml:6: bogus: unknown key"):
        load_config(root, source)


def test_no_config_found(tmp_path):
    root, source = find_project(str(tmp_path))
    assert source is None
    c = load_config(root, None)
    with pytest.raises(ConfigError, match="no pipeline given and none configured"):
        resolve_pipeline_spec(c, None)

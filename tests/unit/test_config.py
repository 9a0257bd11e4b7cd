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


def test_a_calls_section_wins_setting_by_setting_and_names_where_each_came_from(tmp_path):
    """[steps.count_2] with an expiry only took the whole call's settings, so count's
    enable_cache = false no longer applied to count_2; and the reason named [steps.count_2],
    a section the file does not have."""
    src = write(tmp_path, "zenbuild.toml", '''
pipelines = ["a:p"]
[steps.count]
enable_cache = false
cache_expires_after = "1d"
[steps.count_2]
cache_expires_after = "1h"
[steps.count_3]
enable_cache = true
''')
    c = load_config(str(tmp_path), src)
    two = c.step_settings("count_2", "count")
    assert two.enable_cache is False and two.cache_expires_after == 3600.0
    assert two.enable_cache_from == "count"
    three = c.step_settings("count_3", "count")
    assert three.enable_cache is True and three.enable_cache_from == "count_3"
    assert three.cache_expires_after == 86400.0
    assert c.step_settings("count_fast", "count").enable_cache_from == "count"
    assert c.step_settings("other", "other") is None


@pytest.mark.parametrize("text,message", [
    ('pipelines = ["a:b"]\nstroe = "x"\n', "zenbuild.toml:2: stroe: unknown key"),
    ('jobs = "4"\n', "zenbuild.toml:1: jobs: expected an integer"),
    ('jobs = true\n', "jobs: expected an integer"),
    ('pipelines = ["nocolon"]\n', 'each entry must be "module:attribute"'),
    ('[steps.a]\nenable_cache = "no"\n', "zenbuild.toml:2: steps.a.enable_cache: expected true or false"),
    ('[watch]\non_busy = "later"\n', 'watch.on_busy: expected "queue" or "restart"'),
    ('pipelines = [\n', "invalid TOML"),
    # values a run accepted and only `cache gc` (or a remote request) refused, if anything
    ('[cache]\nmax_size = "lots"\n', "zenbuild.toml:2: cache.max_size: size 'lots': expected"),
    ('[cache]\ntrash_keep = "soon"\n', "zenbuild.toml:2: cache.trash_keep: age 'soon'"),
    ('[cache]\ntimeout_s = -5\n', "zenbuild.toml:2: cache.timeout_s: expected seconds > 0"),
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


def _age(path, seconds=10):
    import os
    import time

    old = time.time() - seconds
    os.utime(path, (old, old))


def test_parsed_config_is_cached_in_the_store_folder_and_follows_edits(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / ".zenbuild").mkdir()
    src = write(tmp_path, "zenbuild.toml", 'pipelines = ["a:p"]\n[params]\ntop = 5\n')
    _age(src)
    c = load_config(str(tmp_path), src)
    cache = tmp_path / ".zenbuild" / "config-cache.json"
    assert json.loads(cache.read_text())["data"] == {"pipelines": ["a:p"], "params": {"top": 5}}
    # a fresh process reads the cache and never imports a TOML parser
    code = ("import sys; from zenbuild.config import load_config; "
            f"c = load_config({str(tmp_path)!r}, {src!r}); "
            "print(c.params['top'], 'tomllib' in sys.modules, 'tomli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5", "False", "False"]
    # an edit of the same size made right away: the new stat (and the racy rule) catch it
    with open(src, "w") as f:
        f.write('pipelines = ["a:p"]\n[params]\ntop = 7\n')
    assert load_config(str(tmp_path), src).params == {"top": 7}
    assert c.params == {"top": 5}


def test_config_cache_is_not_kept_for_another_store_or_a_bad_file(tmp_path):
    (tmp_path / ".zenbuild").mkdir()
    cache = tmp_path / ".zenbuild" / "config-cache.json"
    src = write(tmp_path, "zenbuild.toml", 'pipelines = ["a:p"]\nstore = "elsewhere"\n')
    _age(src)
    load_config(str(tmp_path), src)
    assert not cache.exists()  # only the default store folder holds it
    src = write(tmp_path, "zenbuild.toml", 'pipelines = ["a:p"]\nbogus = 1\n')
    _age(src)
    with pytest.raises(ConfigError, match="bogus"):
        load_config(str(tmp_path), src)
    assert not cache.exists()
    cache.write_text("{not json")  # a damaged cache is ignored
    src = write(tmp_path, "zenbuild.toml", 'pipelines = ["a:p"]\n')
    _age(src)
    assert load_config(str(tmp_path), src).pipelines == ("a:p",)


def test_fingerprint_trace_settings(tmp_path):
    c = load_config(str(tmp_path), write(tmp_path, "zenbuild.toml", "pipelines = []\n"))
    assert c.track_reads is True and c.trace_calls is True and c.ignore_env == ()
    src = write(tmp_path, "zenbuild.toml", '''
[fingerprint]
track_reads = false
trace_calls = false
ignore_env = ["MY_*", "SEED"]
''')
    c = load_config(str(tmp_path), src)
    assert (c.track_reads, c.trace_calls, c.ignore_env) == (False, False, ("MY_*", "SEED"))
    for bad, msg in (("track_reads = 1", "fingerprint.track_reads: expected true or false"),
                     ("ignore_env = [1]", "fingerprint.ignore_env: each entry must be"),
                     ("ignore_env = 'X'", "fingerprint.ignore_env: expected a list"),
                     ("track_files = true", "fingerprint.track_files: unknown key")):
        src = write(tmp_path, "zenbuild.toml", f"[fingerprint]\n{bad}\n")
        with pytest.raises(ConfigError, match=msg):
            load_config(str(tmp_path), src)


def test_fingerprint_trace_settings_in_pyproject(tmp_path):
    src = write(tmp_path, "pyproject.toml", '''
[tool.zenbuild.fingerprint]
trace_calls = false
ignore_env = ["SEED"]
''')
    c = load_config(str(tmp_path), src)
    assert c.trace_calls is False and c.ignore_env == ("SEED",) and c.track_reads is True

"""End-to-end: a step must return its value. An async def, an async generator or a generator
function is refused where it is defined (exit 2, one message naming the step and its file, no
zenbuild frames), not accepted and then failed at run time with a pickling error."""

from __future__ import annotations

import pytest

from tests.conftest import Project

BODIES = {
    "async": ("async def fetch() -> int:\n    await asyncio.sleep(0)\n    return 1\n",
              "an async def"),
    "generator": ("def fetch():\n    yield 1\n", "a generator function"),
    "async_generator": ("async def fetch():\n    yield 1\n", "an async generator"),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_lazy_step_is_refused_at_definition(project: Project, kind: str) -> None:
    body, what = BODIES[kind]
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", "import asyncio\nfrom zenbuild import step, pipeline\n\n"
                  "@step\n" + body + "\n@step\ndef use(x) -> int:\n    return 1\n\n"
                  "@pipeline\ndef p():\n    use(fetch())\n")
    r = project.cli("run", check=2)
    assert f"@step fetch ({project.root / 'pipe.py'}:4) is {what}" in r.output, r
    assert "asyncio.run" in r.output
    assert "Traceback" not in r.output and "zenbuild/" not in r.output.replace(
        str(project.root), ""), r
    assert "RuntimeWarning" not in r.output and "pickle" not in r.output, r

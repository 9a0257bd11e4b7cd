#!/usr/bin/env python3
"""Generate synthetic zenbuild projects for benchmarking.

A synthetic project has:

* ``zenbuild.toml`` listing ``pipelines = ["synth:synth"]``;
* ``data/dNNN/fNNNNN.txt``: ``n_files`` text files of exactly 4 KiB each (64 lines of random
  hex), deterministic by seed, at most 1000 per subfolder;
* ``synth.py``: ONE step function ``work`` and a pipeline ``synth`` calling it ``n_steps`` times
  in a layered DAG (layers about ``sqrt(n_steps)`` wide).  Every step reads 5 data files
  (``File`` markers inside a list argument) plus the results of 2 upstream steps (first layer:
  none) and writes ``build/sNNNN.txt`` (a digest and a small summary of what it read);
* ``synth_spec.json``: the DAG as data (which files and upstream steps each step uses).

Two edge styles are supported (``edges=``):

* ``"handle"`` (default): upstream steps are passed as handles in the ``ups`` list; the
  downstream step receives their return values (an int digest) and mixes them in;
* ``"file"``: upstream outputs are passed as ``File("build/sNNNN.txt")`` markers in ``inputs``
  (edges are inferred from matching ``Output`` paths, as in make) and read from disk.

``bare_script`` writes ``bare.py``, a plain script doing the same work without any tool (the
"bare script" baseline); ``doit_script`` writes an equivalent ``dodo.py`` for doit.
``generate_big`` writes a one-step project reading one large file (no-op cost vs input size).

CLI: ``python benchmarks/gen_synthetic.py DEST --steps 200 --files 2000 [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE_SIZE = 4096
FILES_PER_STEP = 5
UPS_PER_STEP = 2
FILES_PER_DIR = 1000
LINE_CHARS = 63  # 63 hex characters + "\n" = 64 bytes per line, 64 lines = 4096 bytes
LINES_PER_FILE = FILE_SIZE // (LINE_CHARS + 1)

EDGE_STYLES = ("handle", "file")

# The body of the step function, shared verbatim by synth.py, bare.py and dodo.py so the three
# do exactly the same work.  ``inputs`` are paths (data files, and upstream outputs in "file"
# style), ``ups`` are upstream return values ("handle" style), ``out`` is the output path.
WORK_BODY = '''\
    h = hashlib.sha256()
    n_bytes = 0
    n_lines = 0
    for p in inputs:
        data = Path(p).read_bytes()
        n_bytes += len(data)
        n_lines += data.count(b"\\n")
        h.update(data)
    for u in ups:
        h.update(str(u).encode())
    digest = h.hexdigest()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{digest} bytes={n_bytes} lines={n_lines} inputs={len(inputs)} ups={len(ups)}\\n")
    return int(digest[:12], 16)
'''


@dataclass
class SynthSpec:
    """The shape of a generated project: which files and upstream steps each step uses."""

    n_steps: int
    n_files: int
    seed: int
    edges: str
    file_paths: list[str]  # relative to the project root, index = file number
    layers: list[list[int]]  # step indices per layer
    step_files: list[list[int]]  # data-file indices read by each step
    step_ups: list[list[int]]  # upstream step indices of each step
    step_width: int = 4
    _readers: dict[int, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def output_path(self, step: int) -> str:
        return f"build/s{step:0{self.step_width}d}.txt"

    def step_inputs(self, step: int) -> list[str]:
        """Relative paths passed as ``File`` markers to ``step``."""
        paths = [self.file_paths[f] for f in self.step_files[step]]
        if self.edges == "file":
            paths += [self.output_path(u) for u in self.step_ups[step]]
        return paths

    def readers(self, file_idx: int) -> list[int]:
        """Steps that read data file ``file_idx`` directly."""
        if not self._readers:
            for s, files in enumerate(self.step_files):
                for f in files:
                    self._readers.setdefault(f, []).append(s)
        return list(self._readers.get(file_idx, []))

    def descendants(self, steps: list[int]) -> set[int]:
        """``steps`` plus every step downstream of them."""
        children: dict[int, list[int]] = {}
        for s, ups in enumerate(self.step_ups):
            for u in ups:
                children.setdefault(u, []).append(s)
        seen = set(steps)
        todo = list(steps)
        while todo:
            for c in children.get(todo.pop(), []):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return seen

    def edit_target(self) -> int:
        """A data file to edit in benchmarks: the first input of the first step of the middle
        layer (so the edit re-executes a realistic slice of the DAG, not all of it)."""
        step = self.layers[len(self.layers) // 2][0]
        return self.step_files[step][0]

    def expected_after_edit(self, file_idx: int) -> set[int]:
        """Steps that must re-execute when the content of ``file_idx`` changes."""
        return self.descendants(self.readers(file_idx))

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("_readers", None)
        return json.dumps(d)


def file_rel_path(i: int) -> str:
    return f"data/d{i // FILES_PER_DIR:03d}/f{i:05d}.txt"


def file_content(rng: random.Random) -> bytes:
    """4096 bytes: 64 lines of 63 random hex characters."""
    hexstr = rng.randbytes(LINES_PER_FILE * LINE_CHARS // 2 + 1).hex()
    lines = [hexstr[k * LINE_CHARS : (k + 1) * LINE_CHARS] for k in range(LINES_PER_FILE)]
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) == FILE_SIZE
    return data


def make_spec(n_steps: int, n_files: int, seed: int = 0, edges: str = "handle") -> SynthSpec:
    """Build the DAG (deterministic by seed) without touching the disk."""
    if n_steps < 1 or n_files < 1:
        raise ValueError("n_steps and n_files must be >= 1")
    if edges not in EDGE_STYLES:
        raise ValueError(f"edges must be one of {EDGE_STYLES}")
    rng = random.Random(f"dag-{seed}")
    width = max(1, round(math.sqrt(n_steps)))
    layers = [list(range(i, min(i + width, n_steps))) for i in range(0, n_steps, width)]
    # Files: walk a random permutation so that reads are spread evenly (each file read by at
    # most ceil(5 * n_steps / n_files) steps, and never twice by the same step).
    perm = rng.sample(range(n_files), n_files)
    per_step = min(FILES_PER_STEP, n_files)
    step_files = [
        [perm[(per_step * s + k) % n_files] for k in range(per_step)] for s in range(n_steps)
    ]
    step_ups: list[list[int]] = []
    for li, layer in enumerate(layers):
        earlier = [s for lay in layers[:li] for s in lay]
        for _ in layer:
            if li == 0:
                step_ups.append([])
                continue
            # One parent from the previous layer (keeps the layering), one from any earlier layer.
            first = rng.choice(layers[li - 1])
            others = [s for s in earlier if s != first]
            ups = [first] + ([rng.choice(others)] if others and UPS_PER_STEP > 1 else [])
            step_ups.append(sorted(ups))
    return SynthSpec(
        n_steps=n_steps,
        n_files=n_files,
        seed=seed,
        edges=edges,
        file_paths=[file_rel_path(i) for i in range(n_files)],
        layers=layers,
        step_files=step_files,
        step_ups=step_ups,
        step_width=max(4, len(str(n_steps - 1))),
    )


def write_data(root: Path, n_files: int, seed: int = 0) -> None:
    rng = random.Random(f"data-{seed}")
    for i in range(n_files):
        path = root / file_rel_path(i)
        if i % FILES_PER_DIR == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file_content(rng))


def _py_list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def synth_source(spec: SynthSpec) -> str:
    """Source of synth.py: the step and an explicit, straight-line pipeline."""
    w = spec.step_width
    lines = [
        f'"""Synthetic zenbuild pipeline: {spec.n_steps} steps over {spec.n_files} files '
        f'(seed {spec.seed}, {spec.edges} edges). Generated by benchmarks/gen_synthetic.py."""',
        "",
        "import hashlib",
        "from pathlib import Path",
        "",
        "from zenbuild import File, Output, pipeline, step",
        "",
        "",
        "@step",
        "def work(inputs: list, ups: list, out: Output) -> int:",
        WORK_BODY.rstrip("\n"),
        "",
        "",
        "@pipeline",
        "def synth():",
    ]
    for s in range(spec.n_steps):
        files = _py_list([f'File("{p}")' for p in spec.step_inputs(s)])
        if spec.edges == "handle":
            ups = _py_list([f"h{u:0{w}d}" for u in spec.step_ups[s]])
        else:
            ups = "[]"
        lines.append(f'    h{s:0{w}d} = work({files}, {ups}, Output("{spec.output_path(s)}"))')
    lines.append("")
    return "\n".join(lines)


def generate(
    root: Path, n_steps: int, n_files: int, seed: int = 0, edges: str = "handle"
) -> SynthSpec:
    """Create a synthetic zenbuild project in ``root`` (which must be empty or absent)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    spec = make_spec(n_steps, n_files, seed, edges)
    (root / "zenbuild.toml").write_text('pipelines = ["synth:synth"]\n')
    write_data(root, n_files, seed)
    (root / "synth.py").write_text(synth_source(spec))
    (root / "synth_spec.json").write_text(spec.to_json())
    return spec


def load_spec(root: Path) -> SynthSpec:
    d = json.loads((Path(root) / "synth_spec.json").read_text())
    return SynthSpec(**d)


def _data_literal(spec: SynthSpec) -> tuple[str, str]:
    """(INPUTS, UPS) Python literals, one step per line."""
    inputs = "[\n" + "".join(f"    {spec.step_inputs(s)!r},\n" for s in range(spec.n_steps)) + "]"
    ups = "[\n" + "".join(f"    {spec.step_ups[s]!r},\n" for s in range(spec.n_steps)) + "]"
    return inputs, ups


def bare_script(root: Path, spec: SynthSpec | None = None) -> Path:
    """Write ``bare.py``: the same work as synth.py in a plain loop, no tool, no caching.

    ``python bare.py [OUT_DIR]`` writes the outputs to OUT_DIR (default ``build_bare``) with the
    same names and contents as ``build/`` of the zenbuild pipeline.
    """
    root = Path(root)
    spec = spec or load_spec(root)
    inputs, ups = _data_literal(spec)
    src = f'''\
"""Bare-script baseline: the work of synth.py with no tool. Generated by gen_synthetic.py."""

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
EDGES = {spec.edges!r}
INPUTS = {inputs}
UPS = {ups}


def work(inputs, ups, out):
{WORK_BODY}

def main() -> None:
    out_dir = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "build_bare")
    results = []
    for i, (rel_inputs, up_idx) in enumerate(zip(INPUTS, UPS)):
        paths = []
        for rel in rel_inputs:
            # In "file" style, upstream outputs (build/...) are read from this run's out_dir.
            paths.append(out_dir / rel[6:] if rel.startswith("build/") else ROOT / rel)
        up_values = [results[j] for j in up_idx] if EDGES == "handle" else []
        results.append(work(paths, up_values, out_dir / f"s{{i:0{spec.step_width}d}}.txt"))


if __name__ == "__main__":
    main()
'''
    path = root / "bare.py"
    path.write_text(src)
    return path


def doit_script(root: Path, spec: SynthSpec | None = None) -> Path:
    """Write ``dodo.py``: the same DAG as doit tasks (md5 file_dep checking, targets in
    ``build_doit/``).  doit has no value passing, so edges are always through output files."""
    root = Path(root)
    spec = spec or load_spec(root)
    w = spec.step_width
    data_inputs = "[\n" + "".join(
        f"    {[spec.file_paths[f] for f in spec.step_files[s]]!r},\n" for s in range(spec.n_steps)
    ) + "]"
    ups = "[\n" + "".join(f"    {spec.step_ups[s]!r},\n" for s in range(spec.n_steps)) + "]"
    src = f'''\
"""doit equivalent of synth.py. Generated by benchmarks/gen_synthetic.py."""

import hashlib
from pathlib import Path

DOIT_CONFIG = {{"dep_file": ".doit.db", "check_file_uptodate": "md5", "verbosity": 1}}
DATA_INPUTS = {data_inputs}
UPS = {ups}


def work(inputs, ups, out):
{WORK_BODY}

def _action(inputs, out):
    work(inputs, [], out)


def task_work():
    for i, (files, up_idx) in enumerate(zip(DATA_INPUTS, UPS)):
        deps = list(files) + [f"build_doit/s{{j:0{w}d}}.txt" for j in up_idx]
        target = f"build_doit/s{{i:0{w}d}}.txt"
        yield {{
            "name": f"s{{i:0{w}d}}",
            "file_dep": deps,
            "targets": [target],
            "actions": [(_action, [deps, target])],
        }}
'''
    path = root / "dodo.py"
    path.write_text(src)
    return path


BIG_PIPELINE = '''\
"""One step over one big file: no-op cost vs input size. Generated by gen_synthetic.py."""

from pathlib import Path

from zenbuild import File, Output, pipeline, step


@step
def measure(src: Path, out: Output) -> int:
    size = Path(src).stat().st_size
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{size}\\n")
    return size


@pipeline
def bigp():
    measure(File("data/blob.bin"), Output("build/size.txt"))
'''


def generate_big(root: Path, size_bytes: int, seed: int = 0) -> Path:
    """A one-step project (``bigp:bigp``) whose step takes ``data/blob.bin`` of ``size_bytes``
    random bytes.  The step only stats the file, so run time beyond startup is the tool's own
    cost of fingerprinting the input.  Returns the blob path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "zenbuild.toml").write_text('pipelines = ["bigp:bigp"]\n')
    (root / "bigp.py").write_text(BIG_PIPELINE)
    blob = root / "data" / "blob.bin"
    blob.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"big-{seed}")
    chunk = 1 << 20
    with blob.open("wb") as fh:
        left = size_bytes
        while left > 0:
            n = min(chunk, left)
            fh.write(rng.randbytes(n))
            left -= n
    return blob


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path, help="project directory to create (must be empty)")
    ap.add_argument("--steps", "-n", type=int, default=200, help="number of steps (N)")
    ap.add_argument("--files", "-f", type=int, default=2000, help="number of input files (F)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edges", choices=EDGE_STYLES, default="handle")
    ap.add_argument("--no-bare", action="store_true", help="do not write bare.py")
    ap.add_argument("--doit", action="store_true", help="also write dodo.py")
    ap.add_argument("--force", action="store_true", help="delete DEST first if it exists")
    args = ap.parse_args(argv)
    if args.force and args.dest.exists():
        shutil.rmtree(args.dest)
    spec = generate(args.dest, args.steps, args.files, seed=args.seed, edges=args.edges)
    if not args.no_bare:
        bare_script(args.dest, spec)
    if args.doit:
        doit_script(args.dest, spec)
    edit = spec.edit_target()
    print(
        f"{args.dest}: {spec.n_steps} steps in {len(spec.layers)} layers, {spec.n_files} files; "
        f"editing {spec.file_paths[edit]} should re-execute "
        f"{len(spec.expected_after_edit(edit))} steps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

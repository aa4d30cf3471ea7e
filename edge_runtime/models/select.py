"""Which variant of a model a node runs, and what it steps down to.

``variant = "auto"`` (the default of every ML node) resolves in this order:

1. the **measured profile** of this device (``edge-runtime profile`` writes
   ``<state dir>/profiles/<device>.toml``): its choice for the model, and its ``ladder`` of
   measured cheaper variants (what the governor steps down to);
2. the **shipped device defaults** (``configs/devices/<device>.toml``): the first of the
   model's own list in the defaults' ``[models]`` table that exists and whose backend is
   installed (what was measured fastest for that model on such a device); else the first
   variant in the defaults' ``precisions`` order whose format an installed backend of the
   defaults' ``backends`` order reads; no ladder (nothing was measured here, so nothing is
   known to be cheaper);
3. the manifest's first variant that an installed backend reads.

An explicit variant is ``precision`` (``fp32``), ``format:precision`` (``onnx:int8-static``) or
either with ``@backend`` (``onnx:fp32@openvino``); the profile's labels
(``onnx/int8-static@onnxruntime``) are accepted too.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from ..errors import ModelError

__all__ = ["VariantChoice", "parse_variant", "resolve_variants"]


@dataclasses.dataclass(frozen=True)
class VariantChoice:
    """A variant of a model on a backend, and why it was chosen."""

    variant: object          # manifest.Variant
    backend: str
    source: str              # "profile <path>", "defaults <path>", "manifest", "explicit"

    @property
    def label(self) -> str:
        v = self.variant
        return f"{v.format}/{getattr(v, 'name', '') or v.precision}@{self.backend}"


def parse_variant(text: str) -> tuple[str | None, str | None, str | None]:
    """``[format(:|/)]precision[@backend]`` -> (format, precision, backend)."""
    spec, _, backend = text.partition("@")
    sep = ":" if ":" in spec else "/"
    fmt, _, prec = spec.rpartition(sep)
    return fmt or None, prec or None, backend or None


def _available(name: str) -> bool:
    from ..backends import BACKENDS

    return name in BACKENDS and BACKENDS[name].available()


def _first_backend(variant, order=None) -> str | None:
    names = [b for b in (order or ()) if b in variant.backends] + [b for b in variant.backends
                                                                    if b not in (order or ())]
    return next((b for b in names if _available(b)), None)


def _pick_backend(variant, forced: str | None, order=None) -> str | None:
    """``forced`` when it is installed and reads the variant; else the first installed backend
    for it in ``order`` (then the format's own order); None when nothing fits."""
    if forced is not None:
        return forced if forced in variant.backends and _available(forced) else None
    return _first_backend(variant, order)


def _lookup(model, label: str, source: str) -> VariantChoice | None:
    fmt, prec, backend = parse_variant(label)
    try:
        v = model.variant(format=fmt, precision=prec)
    except ModelError:
        return None
    b = _pick_backend(v, backend)
    return VariantChoice(v, b, source) if b else None


def _measured(model, profile_path) -> list[VariantChoice] | None:
    from .profiler import load_profile

    try:
        prof = load_profile(profile_path)
    except Exception:  # an unreadable profile is ignored, not fatal: the defaults still work
        return None
    c = (prof.get("choices") or {}).get(model.name)
    if not isinstance(c, Mapping) or not c.get("chosen"):
        return None
    src = f"profile {profile_path}"
    first = _lookup(model, str(c["chosen"]), src)
    if first is None:
        return None
    rest = [_lookup(model, str(lab), src) for lab in c.get("ladder") or ()]
    return [first] + [r for r in rest if r is not None and r.label != first.label]


def resolve_variants(model, variant: str = "auto", backend: str | None = None, *,
                     device: str | None = None, state_dir=None) -> list[VariantChoice]:
    """The variant to run first, then the cheaper ones a governor may step down to.

    ``backend`` forces a backend (variants it cannot read are skipped). Raises ModelError naming
    what exists when nothing fits."""
    from .profiler import detect_device, load_device_defaults, profile_path

    if variant != "auto":
        fmt, prec, b = parse_variant(variant)
        b = b or backend
        v = model.variant(format=fmt, precision=prec)
        if b is None:
            b = _first_backend(v)
            if b is None:
                from ..backends import get_backend

                raise get_backend(v.backends[0]).not_installed()
        return [VariantChoice(v, b, "explicit")]

    dev = device or os.environ.get("EDGE_RUNTIME_DEVICE") or detect_device()
    if backend is None:
        path = profile_path(dev, state_dir)
        if path.is_file():
            got = _measured(model, path)
            if got:
                return got
    try:
        defaults = load_device_defaults(dev)
    except Exception:
        defaults = None
    if defaults:
        order = list(defaults.get("backends") or [])
        src = f"defaults {defaults.get('path')}"
        for label in (defaults.get("models") or {}).get(model.name) or ():
            fmt, prec, b = parse_variant(label)
            if backend is not None and b not in (None, backend):
                continue
            try:
                v = model.variant(format=fmt, precision=prec)
            except ModelError:   # not shipped (or another manifest): the next one
                continue
            b = _pick_backend(v, b or backend, order)
            if b:
                return [VariantChoice(v, b, f"{src} [models] {model.name}")]
        for prec in defaults.get("precisions") or ():
            for v in model.variants:
                b = _pick_backend(v, backend, order) if v.precision == prec and not v.alternative else None
                if b:
                    return [VariantChoice(v, b, src)]
    for v in model.variants:
        b = None if v.alternative else _pick_backend(v, backend)
        if b:
            return [VariantChoice(v, b, "manifest")]
    have = ", ".join(f"{v.format}/{v.precision}" for v in model.variants) or "none"
    raise ModelError(f"{model.manifest}: model {model.name!r}: no installed backend"
                     f"{' ' + backend if backend else ''} reads any of its variants ({have})")

"""The one place that maps OTel series to backend keys (STYLE.md #3).

A series is a metric name plus its non-step attributes. Each backend has a
:class:`NameRules` row: legal characters, maximum length, path rules. The
:class:`NameMapper` applies the row, caches the result, and detects two
different series that map to the same key: the later one gets a stable
``_h<hash>`` suffix and the collision is logged once, so no values are mixed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from otel_rl.model.lru import LRU

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NameRules:
    """How one backend spells keys. ``illegal`` matches characters to replace with ``_``."""

    backend: str
    max_len: int | None = None
    illegal: re.Pattern | None = None
    #: Backends that treat keys as paths (MLflow) refuse ``..``, leading ``/`` and ``//``.
    path_like: bool = False
    #: Characters the backend trims from both ends (SwanLab), trimmed here so we know the key.
    strip: str = ""


RULES: dict[str, NameRules] = {
    # TensorBoard tags are free-form strings; "/" groups them in the UI.
    "tensorboard": NameRules("tensorboard"),
    # MLflow: ^[/\w.\- :]*$, <= 250 chars, not path-like (verl#119, NeMo-RL#1068).
    "mlflow": NameRules("mlflow", 250, re.compile(r"[^/\w.\- :]"), path_like=True),
    # W&B keys: "/" groups panels; other characters are kept, but control chars break the UI.
    "wandb": NameRules("wandb", 255, re.compile(r"[\x00-\x1f]")),
    # SwanLab 0.10.3 keeps any printable key, rejects control characters, trims leading and
    # trailing "/", "." and whitespace, and cuts keys at 512 characters.
    "swanlab": NameRules("swanlab", 512, re.compile(r"[\x00-\x1f\x7f]"), strip="/. \t"),
}


#: Attributes that describe a series but do not identify it (the GPU's model name is fixed
#: by its ``hw.id``): left out of backend keys, kept on the OTel stream.
DESCRIPTIVE_ATTRIBUTES = frozenset({"hw.name", "hw.vendor", "hw.gpu.pci_bus_id", "hw.type", "hw.driver_version",
                                    "hw.model"})


_PLAIN = re.compile(r"[\w.\-:@+=,]{1,128}")


def path_component(name: str) -> str:
    """``name`` as one safe file-name component: kept when it is a plain name, otherwise
    illegal characters become ``_`` and a short hash keeps distinct names distinct."""
    if _PLAIN.fullmatch(name) and name.strip(".") and not name.startswith("."):
        return name
    cleaned = re.sub(r"[^\w.\-:@+=,]", "_", name).lstrip(".")[:100] or "run"
    return f"{cleaned}-{hashlib.blake2b(name.encode('utf-8', 'surrogatepass'), digest_size=4).hexdigest()}"


def series_key(name: str, attributes: tuple[tuple[str, str], ...] = (), suffix: str = "") -> str:
    """The backend-neutral key: ``name[/k:v[/k2:v2]][/suffix]`` (legal in every backend,
    MLflow included, when names and values are)."""
    key = name
    if attributes:
        key += "".join(f"/{k}:{v}" for k, v in attributes if k not in DESCRIPTIVE_ATTRIBUTES)
    if suffix:
        key += "/" + suffix
    return key


#: Names remembered per backend (see :class:`NameMapper`), and rename warnings logged per backend.
MAX_NAMES, MAX_WARNINGS = 200_000, 1_000


class NameMapper:
    """Maps series keys to one backend's legal keys; one instance per sink."""

    def __init__(self, backend: str) -> None:
        if backend not in RULES:
            raise ValueError(f"no name rules for backend {backend!r}; known: {sorted(RULES)}")
        self.rules = RULES[backend]
        # bounded (a client inventing millions of names must not grow memory without end); past
        # the bound the least recently used names are forgotten, and a collision with one of those
        # is no longer detected
        self._cache: LRU = LRU(MAX_NAMES)  # (name, attributes, suffix) -> key: no string building per point
        self._neutral: LRU = LRU(MAX_NAMES)
        self._owner: LRU = LRU(MAX_NAMES)
        self.collisions = 0
        self._warnings = 0

    def key(self, name: str, attributes: tuple[tuple[str, str], ...] = (), suffix: str = "") -> str:
        mapped = self._cache.get((name, attributes, suffix))
        if mapped is None:
            neutral = series_key(name, attributes, suffix)
            mapped = self._neutral.get(neutral)
            if mapped is None:
                mapped = self._map(neutral)
                self._neutral.put(neutral, mapped)
            self._cache.put((name, attributes, suffix), mapped)
        return mapped

    def _warn(self, message: str, *args) -> None:
        self._warnings += 1
        if self._warnings <= MAX_WARNINGS:
            _log.warning(message + ("" if self._warnings < MAX_WARNINGS else " (no more such warnings)"), *args)

    def _map(self, neutral: str) -> str:
        rules = self.rules
        mapped = neutral
        if rules.illegal is not None:
            mapped = rules.illegal.sub("_", mapped)
        if rules.strip:
            mapped = mapped.strip(rules.strip) or "_"
        if rules.path_like:
            mapped = re.sub(r"/{2,}", "/", mapped).strip("/")
            mapped = mapped.replace("..", "__") or "_"
            if "." in mapped.split("/"):  # a "." segment: MLflow refuses the whole log_batch
                mapped = "/".join("_" if segment == "." else segment for segment in mapped.split("/"))
        if rules.max_len is not None and len(mapped) > rules.max_len:
            mapped = mapped[: rules.max_len - 9] + "_h" + _short_hash(neutral)
        if mapped != neutral:
            self._warn("%s: key %r renamed to %r (backend naming rules)", rules.backend, neutral, mapped)
        owner = self._owner.get(mapped)
        if owner is None:
            self._owner.put(mapped, neutral)
            owner = neutral
        if owner != neutral:
            self.collisions += 1
            disambiguated = mapped[: (rules.max_len or len(mapped) + 9) - 9] + "_h" + _short_hash(neutral)
            self._warn("%s: keys %r and %r both map to %r; the second is logged as %r",
                       rules.backend, owner, neutral, mapped, disambiguated)
            mapped = disambiguated
            self._owner.put(mapped, neutral)
        return mapped


def _short_hash(text: str) -> str:
    return hashlib.blake2s(text.encode(), digest_size=4).hexdigest()[:7]

"""The rejects gallery: archived rejects and fail-safes, newest first, with cached thumbnails.

The archive folder is listed at most every `list_ttl_s` and each part's .json is parsed once (bounded caches),
so fifty tablets paging the gallery cost one directory listing and no repeated decoding.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

NAME = re.compile(r"^(?P<t>\d{8}T\d{6}\.\d{3}Z)_s(?P<seq>\d+)_p(?P<part>-?\d+)_(?P<verdict>pass|reject|failsafe)$")
STEM = re.compile(r"^[A-Za-z0-9._-]+/\d{8}T\d{6}\.\d{3}Z_s\d+_p-?\d+_(pass|reject|failsafe)$")
THUMB_WIDTH = 200


class Lru(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Gallery:
    def __init__(self, root: Path, list_ttl_s: float = 2.0, cache: int = 512) -> None:
        self.root = Path(root)
        self.list_ttl_s = list_ttl_s
        self._lock = threading.Lock()
        self._listed_at = -1e9
        self._stems: list[str] = []
        self._meta: Lru = Lru(cache * 4)
        self._thumbs: Lru = Lru(cache)

    def _list(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._listed_at < self.list_ttl_s:
                return self._stems
            stems: list[tuple[str, str]] = []
            if self.root.is_dir():
                for folder in self.root.iterdir():
                    if not folder.is_dir():
                        continue
                    for f in folder.glob("*.json"):
                        m = NAME.match(f.stem)
                        if m and m["verdict"] != "pass":
                            stems.append((f.stem, f"{folder.name}/{f.stem}"))
            self._stems = [s for _, s in sorted(stems, reverse=True)]
            self._listed_at = time.monotonic()
            return self._stems

    def path(self, stem: str, suffix: str) -> Path | None:
        """The file of an archived part, or None for a name that is not one (no path escapes the archive)."""
        if not STEM.match(stem):
            return None
        p = self.root / (stem + suffix)
        return p if p.is_file() else None

    def meta(self, stem: str) -> dict[str, Any] | None:
        cached = self._meta.get(stem)
        if cached is not None:
            return dict(cached)
        p = self.path(stem, ".json")
        if p is None:
            return None
        try:
            v = json.loads(p.read_bytes())
        except (OSError, ValueError):
            return None
        m = {"stem": stem, "product": v.get("product"), "verdict": v.get("verdict"), "reason": v.get("reason"),
             "score": v.get("score"), "seq": v.get("seq"), "part_id": v.get("part_id"),
             "wall_time": v.get("wall_time"), "latency_ms": v.get("latency_ms"),
             "image": (self.root / (stem + ".png")).is_file()}
        with self._lock:
            self._meta.put(stem, m)
        return dict(m)

    def items(self, product: str | None = None, reason: str | None = None, limit: int = 60,
              marks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        products: set[str] = set()
        reasons: set[str] = set()
        for stem in self._list():
            m = self.meta(stem)
            if m is None:
                continue
            products.add(str(m["product"]))
            reasons.add(str(m["reason"]))
            if len(out) >= limit or (product and m["product"] != product) or (reason and m["reason"] != reason):
                continue
            m["mark"] = (marks or {}).get(stem, {}).get("mark")
            out.append(m)
        return {"items": out, "products": sorted(products), "reasons": sorted(reasons)}

    def thumbnail(self, stem: str) -> bytes | None:
        """The annotated image (ROI, heatmap, verdict) downscaled; cached."""
        cached = self._thumbs.get(stem)
        if cached is not None:
            return bytes(cached)
        p = self.path(stem, ".jpg")
        if p is None:
            return None
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            return None
        h, w = img.shape[:2]
        if w > THUMB_WIDTH:
            img = cv2.resize(img, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        data = buf.tobytes()
        with self._lock:
            self._thumbs.put(stem, data)
        return data

    def export(self, marks: dict[str, dict[str, Any]], mark: str = "false_reject") -> bytes:
        """A zip of the marked parts: lossless .png, annotated .jpg and .json each, plus marks.json."""
        buf = io.BytesIO()
        chosen = {s: m for s, m in marks.items() if m.get("mark") == mark}
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # PNG and JPEG are compressed already
            for stem in sorted(chosen):
                for suffix in (".png", ".jpg", ".json"):
                    p = self.path(stem, suffix)
                    if p is not None:
                        z.write(p, f"{mark}/{stem}{suffix}")
            z.writestr("marks.json", json.dumps(chosen, indent=1))
        return buf.getvalue()

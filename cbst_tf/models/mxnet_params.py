"""Reading MXNet 1.x ``.params`` files with numpy only.

The official CBST / ResNet-38 models (``*_rna-a1_*.params``) are ``mx.nd.save`` dumps of a
name -> NDArray dict. MXNet itself is unmaintained and imports only with numpy < 1.24, so
this module reads the binary layout directly (little-endian throughout):

* list header: ``u64 0x112`` (the NDArray-list magic), ``u64 0`` (reserved);
* ``u64 n``, then ``n`` NDArrays;
* ``u64 n_names``, then ``n_names`` strings (``u64 length`` + UTF-8 bytes), one per array,
  ``arg:<name>`` for parameters and ``aux:<name>`` for auxiliary states (BN statistics).

One NDArray:

* ``u32`` magic: ``0xF993FAC8`` (V1), ``0xF993FAC9`` (V2, what MXNet 1.x writes) or
  ``0xF993FACA`` (V3, NumPy-shape semantics); any other value is the ``ndim`` of the
  legacy (pre-V1) layout;
* V2/V3 only: ``i32`` storage type (0 = dense; sparse arrays are refused);
* shape: ``i32 ndim`` then ``ndim`` x ``i64`` (legacy: ``ndim`` x ``u32``). An empty shape
  (``ndim`` 0, or -1 in V3) is a "none" array that has nothing after it;
* ``i32 dev_type``, ``i32 dev_id`` (ignored), ``i32 dtype`` (0 f32, 1 f64, 2 f16, 3 u8,
  4 i32, 5 i8, 6 i64), then the raw C-order data.

Every defect is a one-line :class:`~cbst_tf.errors.CbstError` naming the file and, where
it applies, the byte offset and array index: a missing file, a file that is not a
``.params`` list, a truncated file, unsupported storage or dtype, names that do not
match the arrays, duplicate names or trailing bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from cbst_tf.errors import CbstError

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"),
    4: np.dtype("<i4"), 5: np.dtype("i1"), 6: np.dtype("<i8"),
}
# Far beyond any real network (ResNet-38 has 195 arrays); a larger count means garbage.
_MAX_ITEMS = 1_000_000


class _Cursor:
    """Sequential little-endian reads from a buffer with truncation errors naming the file."""

    def __init__(self, path: Path, buf):
        self.path, self.buf, self.pos = path, buf, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if size < 0 or end > len(self.buf):
            raise CbstError(f"{self.path}: truncated .params file: {what} needs {size} bytes at byte "
                            f"{self.pos}, the file has {len(self.buf)}")
        view = memoryview(self.buf)[self.pos:end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def one(self, fmt: str, what: str) -> int:
        return self.unpack(fmt, what)[0]


def _read_array(cur: _Cursor, index: int) -> np.ndarray | None:
    """One NDArray at the cursor; ``None`` for an empty ("none") array."""
    what = f"array {index}"
    magic = cur.one("I", f"{what} header")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = cur.one("i", f"{what} storage type")
        if stype != 0:
            raise CbstError(f"{cur.path}: array {index} has storage type {stype} (sparse); "
                            "only dense arrays are supported")
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        ndim = cur.one("i", f"{what} ndim")
        dim_fmt = "q"
    else:  # legacy layout: the u32 just read is ndim, dims are u32
        ndim, dim_fmt = magic, "I"
    if ndim > 32:
        raise CbstError(f"{cur.path}: array {index} claims {ndim} dimensions at byte {cur.pos}; "
                        "not an MXNet .params file or corrupt")
    if ndim <= 0 and not (magic == V3_MAGIC and ndim == 0):
        return None  # an empty array: MXNet writes nothing after its shape
    shape = tuple(int(d) for d in cur.unpack(f"{ndim}{dim_fmt}", f"{what} shape"))
    if any(d < 0 for d in shape):
        raise CbstError(f"{cur.path}: array {index} has a negative dimension {shape}; corrupt file")
    cur.unpack("ii", f"{what} device")
    code = cur.one("i", f"{what} dtype")
    if code not in DTYPES:
        raise CbstError(f"{cur.path}: array {index} has unsupported dtype code {code} "
                        f"(known: {sorted(DTYPES)})")
    dtype = DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    data = cur.take(count * dtype.itemsize, f"{what} data ({shape}, {dtype.name})")
    # A read-only view into the file's bytes (no copy); byte-swapped only on big-endian hosts.
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def parse_params(path: str | Path, buf) -> dict[str, np.ndarray]:
    """The name -> array dict encoded in ``buf`` (bytes-like), errors naming ``path``."""
    path = Path(path)
    cur = _Cursor(path, buf)
    if len(buf) < 16:
        raise CbstError(f"{path}: not an MXNet .params file ({len(buf)} bytes, shorter than the header)")
    magic, reserved = cur.unpack("QQ", "header")
    if magic != LIST_MAGIC:
        raise CbstError(f"{path}: not an MXNet .params file (header 0x{magic:x}, expected 0x{LIST_MAGIC:x})")
    if reserved != 0:
        raise CbstError(f"{path}: not an MXNet .params file (reserved header field is {reserved}, expected 0)")
    count = cur.one("Q", "array count")
    if count > _MAX_ITEMS:
        raise CbstError(f"{path}: implausible array count {count}; corrupt .params file")
    arrays = [_read_array(cur, i) for i in range(count)]
    n_names = cur.one("Q", "name count")
    if n_names != count:
        detail = "no names (a plain array list)" if n_names == 0 else f"{n_names} names"
        raise CbstError(f"{path}: {count} arrays but {detail}; expected one name per array")
    out: dict[str, np.ndarray] = {}
    for i in range(n_names):
        length = cur.one("Q", f"name {i} length")
        raw = bytes(cur.take(length, f"name {i}"))
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CbstError(f"{path}: name {i} is not valid UTF-8 ({raw[:40]!r})") from None
        if name in out:
            raise CbstError(f"{path}: duplicate array name '{name}'")
        if arrays[i] is None:
            raise CbstError(f"{path}: array '{name}' is empty")
        out[name] = arrays[i]
    if cur.pos != len(buf):
        raise CbstError(f"{path}: {len(buf) - cur.pos} unexpected bytes after the last name "
                        f"(byte {cur.pos}); corrupt .params file")
    return out


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """Read an MXNet ``.params`` file into ``{"arg:name" | "aux:name": numpy array}``.

    The arrays are read-only views into the file's bytes, so a ~500 MB model costs its own
    size in memory once. Raises a one-line :class:`CbstError` for any defect (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise CbstError(f"{path}: .params file not found")
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise CbstError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    return parse_params(path, buf)

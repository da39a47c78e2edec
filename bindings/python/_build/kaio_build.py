"""The build backend of the kaio package (PEP 517, with PEP 660 editable
installs), written with the standard library only.

kaio is pure Python: a wheel is a zip of kaio/*.py and its .dist-info, an
sdist a tar of the source. With no build requirements (pyproject.toml:
requires = [], backend-path = ["_build"]), `pip install bindings/python`
needs nothing from an index, and works offline in any venv and with any
Python 3.8+, where setuptools would have to be downloaded (build isolation)
or present with `wheel`.

The metadata is pyproject.toml's [project] table, read by a small parser of
the TOML this file uses (strings and arrays of strings); tomllib is not in
Python before 3.11.
"""
import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "kaio"


def project(path=None):
    """The [project] table of pyproject.toml: {key: str or list of str}.
    Raises ValueError on a line it does not understand, rather than
    building a wheel with metadata it misread."""
    path = path or os.path.join(ROOT, "pyproject.toml")
    out, section, key, items = {}, None, None, None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if items is not None:  # inside a multi-line array
                if line.startswith("]"):
                    out[key], items = items, None
                elif line and not line.startswith("#"):
                    items.append(_string(line.rstrip(","), path, n))
                continue
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^\[([A-Za-z0-9_.-]+)\]$", line)
            if m:
                section = m.group(1)
                continue
            if section != "project":
                continue
            m = re.match(r"^([A-Za-z0-9_-]+)\s*=\s*(.*)$", line)
            if not m:
                raise ValueError("%s:%d: not understood: %s" % (path, n, line))
            key, value = m.group(1), m.group(2).strip()
            if value == "[":
                items = []
            elif value.startswith("[") and value.endswith("]"):
                inner = value[1:-1].strip()
                out[key] = [_string(v.strip(), path, n) for v in inner.split(",") if v.strip()]
            else:
                out[key] = _string(value, path, n)
    if items is not None:
        raise ValueError("%s: an array of [project] is not closed" % path)
    for need in ("name", "version"):
        if need not in out:
            raise ValueError("%s: [project] has no %s" % (path, need))
    return out


def _string(tok, path, n):
    m = re.match(r'^"([^"\\]*)"$', tok)
    if not m:
        raise ValueError("%s:%d: expected a \"string\" without escapes: %s" % (path, n, tok))
    return m.group(1)


def metadata_text(meta):
    """The METADATA (core metadata 2.1) of the project."""
    lines = ["Metadata-Version: 2.1", "Name: " + meta["name"], "Version: " + meta["version"]]
    if "description" in meta:
        lines.append("Summary: " + meta["description"])
    if "requires-python" in meta:
        lines.append("Requires-Python: " + meta["requires-python"])
    for c in meta.get("classifiers", []):
        lines.append("Classifier: " + c)
    for d in meta.get("dependencies", []):
        lines.append("Requires-Dist: " + d)
    body = ""
    readme = meta.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _dist_name(meta):
    return re.sub(r"[-_.]+", "_", meta["name"]).lower()


def _dist_info(meta):
    return "%s-%s.dist-info" % (_dist_name(meta), meta["version"])


WHEEL_TEXT = ("Wheel-Version: 1.0\nGenerator: kaio_build\n"
              "Root-Is-Purelib: true\nTag: py3-none-any\n")


def _package_files():
    """(path in the wheel, path on disk) of every module of the package."""
    src = os.path.join(ROOT, PACKAGE)
    out = []
    for name in sorted(os.listdir(src)):
        if name.endswith(".py"):
            out.append(("%s/%s" % (PACKAGE, name), os.path.join(src, name)))
    if not out:
        raise ValueError("no module under %s" % src)
    return out


def _digest(data):
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + h.decode("ascii")


def _write_wheel(directory, meta, members):
    """A wheel of members [(arcname, bytes)] plus the .dist-info; its name."""
    info = _dist_info(meta)
    members = list(members) + [
        (info + "/METADATA", metadata_text(meta).encode("utf-8")),
        (info + "/WHEEL", WHEEL_TEXT.encode("ascii")),
        (info + "/top_level.txt", (PACKAGE + "\n").encode("ascii")),
    ]
    record = "".join("%s,%s,%d\n" % (arc, _digest(data), len(data)) for arc, data in members)
    record += info + "/RECORD,,\n"
    members.append((info + "/RECORD", record.encode("utf-8")))
    name = "%s-%s-py3-none-any.whl" % (_dist_name(meta), meta["version"])
    stamp = time.gmtime(_epoch())[:6]
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in members:
            zi = zipfile.ZipInfo(arc, date_time=stamp)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return name


def _epoch():
    """The files' time: SOURCE_DATE_EPOCH (reproducible builds), else now;
    never before 1980, which zip cannot hold."""
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())), 315532800)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- PEP 517 -------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    meta = project()
    info = os.path.join(metadata_directory, _dist_info(meta))
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(metadata_text(meta))
    with open(os.path.join(info, "WHEEL"), "w", encoding="ascii") as f:
        f.write(WHEEL_TEXT)
    return os.path.basename(info)


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    meta = project()
    return _write_wheel(wheel_directory, meta,
                        [(arc, _read(path)) for arc, path in _package_files()])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: a wheel whose .pth puts this source tree on sys.path."""
    meta = project()
    pth = ("%s\n" % ROOT).encode("utf-8")
    return _write_wheel(wheel_directory, meta, [("_%s_editable.pth" % PACKAGE, pth)])


def build_sdist(sdist_directory, config_settings=None):
    meta = project()
    base = "%s-%s" % (_dist_name(meta), meta["version"])
    files = [("pyproject.toml", os.path.join(ROOT, "pyproject.toml")),
             ("_build/kaio_build.py", os.path.abspath(__file__))]
    if meta.get("readme"):
        files.append((meta["readme"], os.path.join(ROOT, meta["readme"])))
    files += _package_files()
    tests = os.path.join(ROOT, "tests")
    if os.path.isdir(tests):
        files += [("tests/" + n, os.path.join(tests, n))
                  for n in sorted(os.listdir(tests)) if n.endswith(".py")]
    name = base + ".tar.gz"
    mtime = _epoch()
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as t:
        def add(arc, data):
            ti = tarfile.TarInfo("%s/%s" % (base, arc))
            ti.size, ti.mode, ti.mtime = len(data), 0o644, mtime
            t.addfile(ti, io.BytesIO(data))
        add("PKG-INFO", metadata_text(meta).encode("utf-8"))
        for arc, path in files:
            add(arc, _read(path))
    return name

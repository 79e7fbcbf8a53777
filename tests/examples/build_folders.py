"""Where the example tests build: a folder in pytest's cache, kept between runs so the C++ build and
npm install happen once per checkout, or a fresh temporary one when the cache is off
(``-p no:cacheprovider``)."""

from pathlib import Path


def build_folder(pytestconfig, tmp_path_factory, name: str) -> Path:
    cache = getattr(pytestconfig, "cache", None)
    return Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)

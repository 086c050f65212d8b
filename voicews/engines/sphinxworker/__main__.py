"""Run as ``python -P <this folder> <settings JSON>``: the worker process (see `__init__`).

Python runs a folder's ``__main__.py`` with the folder itself first on sys.path and no
package around it.  The folder comes off sys.path (its modules are not top-level modules)
and is loaded as the package ``sphinxworker``, so its modules' relative imports work
without importing ``voicews`` (the daemon's package, which they do not need).
"""

import importlib
import importlib.util
import os
import sys


def _load_package() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.util.spec_from_file_location(
        "sphinxworker", os.path.join(here, "__init__.py"), submodule_search_locations=[here])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)


if __name__ == "__main__":
    _load_package()
    sys.exit(importlib.import_module("sphinxworker.worker").main(sys.argv))

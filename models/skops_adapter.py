"""The skops adapter: scikit-learn estimators saved with skops, loaded with a type
allow-list, never unpickled.

skops builds only the types it trusts and those on ``TRUSTED_TYPES``; anything else in an
artifact (``builtins.eval``, a function, a class of some other package) is refused before
any of it is built. skops (and with it all of scikit-learn and SciPy, ~5 s on a small
machine) is imported when a model is saved or loaded, not when the module is: a worker of
the stages that never load a model starts without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgewise.models.errors import RegistryError

#: Types skops may build beyond the ones it trusts by default, by exact name. Nothing
#: callable (``builtins.eval``, numpy ufuncs, functions) is ever on this list: a forest's
#: trees, and the dtype the imputer records.
TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree", "numpy.dtype"})


class SkopsAdapter:
    """scikit-learn estimators (pipelines too), as ``model.skops``."""

    artifact = "model.skops"

    def save(self, model: Any, path: Path, features: int) -> None:
        import skops.io as sio

        sio.dump(model, path)

    def load(self, path: Path) -> Any:
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # skops raises assorted errors on corrupt archives
            raise RegistryError(f"{path} is unreadable: {exc}") from None
        refused = [t for t in untrusted if t not in TRUSTED_TYPES]
        if refused:
            raise RegistryError(f"{path} needs untrusted types: {', '.join(refused)}")
        return sio.load(path, trusted=untrusted)

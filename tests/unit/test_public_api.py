"""What `import dynakv` offers a user: the clients and every error they can raise."""

from __future__ import annotations

import dynakv
from dynakv import errors


def test_every_error_class_is_importable_from_the_package() -> None:
    public = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.DynakvError)
    }
    assert public <= set(dynakv.__all__)
    for name in public:
        assert getattr(dynakv, name) is getattr(errors, name)

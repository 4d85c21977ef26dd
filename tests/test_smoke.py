import app


def test_package_imports() -> None:
    """The package imports and documents itself."""
    assert app.__doc__

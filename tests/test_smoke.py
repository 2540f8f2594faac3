import vlmrl_fast


def test_version_matches_native_module():
    from vlmrl_fast import _core

    assert vlmrl_fast.__version__ == _core.__version__
    assert vlmrl_fast.__version__.count(".") == 2

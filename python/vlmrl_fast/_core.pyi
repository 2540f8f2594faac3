"""Type stubs of the private native module vlmrl_fast._core."""

__version__: str

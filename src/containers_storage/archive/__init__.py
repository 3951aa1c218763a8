"""Layer tarballs: apply (tar -> directory), export (directory -> tar), changes and tar-split.

Kept import-light on purpose: the CLI imports this package on every start, so submodules (which
pull in compression libraries and ctypes) are imported by their callers, never from here.
"""

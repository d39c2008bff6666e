"""The built-in implementations: one file per implementation, named as registered.

They import only ``core`` and are registered by :mod:`.plugin`, the built-in plugin, through the
same hook a third-party plugin uses.
"""

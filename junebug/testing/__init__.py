"""Public test helpers for applications and channels built on Junebug.

:mod:`junebug.testing.smsc`: :class:`~junebug.testing.smsc.SmscProcess`, the SMSC
simulator as a child process with async helpers over its control API.
"""

"""An SMPP 3.4 SMSC simulator: try a Junebug smpp channel without an operator, test one.

- :mod:`junebug.smsc.simulator`: the SMSC itself (:class:`SmscSimulator`), pure Twisted;
- :mod:`junebug.smsc.control`: its HTTP control API;
- :mod:`junebug.smsc.cli`: the ``jb-smsc`` command.

:mod:`junebug.testing.smsc` runs ``jb-smsc`` as a child process for tests.
"""

from junebug.smsc.simulator import NotBound, SimulatorError, SmscSimulator

__all__ = ["NotBound", "SimulatorError", "SmscSimulator"]

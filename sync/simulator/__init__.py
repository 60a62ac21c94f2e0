"""A Kaleyra Get/Change Blocklist simulator: a real HTTP server on loopback.

Files named for their roles: :mod:`~sync.simulator.vendor` (the bodies and numbers the vendor
serves), :mod:`~sync.simulator.account` (one account's lists, faults and answers: the
:class:`Simulator`), :mod:`~sync.simulator.faults` (each misbehaviour and its answer),
:mod:`~sync.simulator.handler` (HTTP).

No Kaleyra account is reachable from development or CI, so the demo, the tests and the
benchmark all talk to this server over real HTTP. Its bodies are shaped exactly like the
vendor's samples (``code``, ``message``, ``data``, ``error``); where the vendor is silent (the
Change Blocklist response, the order of rows) the choice is noted inline.

Used from code::

    with Simulator.start(numbers=1000) as sim:
        sim.base_url, sim.sid, sim.api_key      # what a client needs
        sim.add("sms", ["+919800000001"])       # change the lists directly
        sim.inject("WA500", at=3)               # fault on the 3rd request
        sim.rows_per_page = 37                  # a server that caps rows per page
        sim.spellings["+919800000001"] = "+٩١٩٨٠٠٠٠٠٠٠١"   # how it writes a number

Faults are part of the simulator's model of a misbehaving Kaleyra, not switches inside the
sync code: the sync code cannot tell this server from the real one.
"""

from sync.simulator.account import Simulator, parse_latency
from sync.simulator.vendor import CHANNELS, VENDOR_ERRORS, Response, generate_numbers

__all__ = ["CHANNELS", "VENDOR_ERRORS", "Response", "Simulator", "generate_numbers", "parse_latency"]

"""The Redis online store: the one owner of its layout, codecs, scripts, writes and reads.

* :mod:`.layout`: every key and field name, and the layout written down once (with why
  terminals are sorted sets and customers a bounded raw history);
* :mod:`.codecs`: stored values as bytes or text, and back;
* ``terminal_write.lua`` and ``snapshot_write.lua``, loaded at start by :mod:`.scripts`;
* :mod:`.writer`: the writes of the aggregator and of the bulk loader;
* :mod:`.reader`: the reads of the inference service, the snapshots and the consistency check;
* :mod:`.generation`: the store's generation marker, which tells a Redis that came back empty
  from a full one (``caught_up.lua`` marks the partitions replayed into it).

Every read and write costs O(log n) or better in an entity's event count, except a customer's,
which is bounded by its 30-day horizon.
"""

from fraudstack.adapters.online_store.codecs import (
    CustomerRecord,
    LastTransaction,
    TerminalSnapshot,
    snapshot_features,
)
from fraudstack.adapters.online_store.reader import NewestRecord, OnlineStoreReader
from fraudstack.adapters.online_store.writer import OnlineStoreWriter

__all__ = [
    "CustomerRecord",
    "LastTransaction",
    "NewestRecord",
    "OnlineStoreReader",
    "OnlineStoreWriter",
    "TerminalSnapshot",
    "snapshot_features",
]

"""The Redis layout of the online store: the one module that knows key and field names.

Every key of an entity carries the entity's hash tag, ``{customer:<id>}`` or ``{terminal:<id>}``,
so all of an entity's keys live in one Redis Cluster slot and every command or script touches
one slot::

    fs:{customer:<id>}                HASH, the customer (bounded raw history + newest features)
      e:<txn_id>     "<ts_ms>:<amount_cents>"  one per event of the last 30 days + lateness
      _last_txn      "<txn_id>:<ts_ms>:<amount_cents>:<terminal_id>"  the newest transaction
      _customer      its customer features, finished at its own time, packed: one
                     little-endian double per name of ``CUSTOMER_FEATURES`` in that order,
                     then the transaction's id (see :mod:`.codecs`); a reader that finds it
                     missing or of another transaction computes them from the ``e:`` events
      _terminal      "<txn_id>:<ts_ms>:<seq>:<events>:<frauds>..."    its terminal windows as
                     whole numbers, counted at terminal write ``seq`` (empty counts: stale)
      _event_ts      newest event time (ms)
      _updated_at    when the hash was last written (ms)
      _epoch         the ownership epoch of its last writer (the fence: see the writer)

    fs:{terminal:<id>}                HASH, the terminal's bookkeeping (a few fields, any volume)
      _event_ts      newest event time (ms)
      _updated_at    when the terminal was last written (ms)
      _seq           write counter, one per script call (orders the ``_terminal`` snapshots)
      _pruned_at     the last prune's cut-off (ms)
      _dropped       the newest event or label time a prune deleted (ms)
      _recount_after, _recount_through   the event times (ms, after .. through) whose
                     customers' stored windows a late event or label changed and are not
                     counted again yet: the recount goes a page per script call
    fs:{terminal:<id>}:events         ZSET  member txn_id, score the event time (ms)
    fs:{terminal:<id>}:labels         ZSET  member txn_id, score its time (ms): the fraud labels
                                            that count, whether or not their event arrived
    fs:{terminal:<id>}:frauds         ZSET  member txn_id, score the event time (ms): the events
                                            that have such a label (events ∩ labels)
    fs:{terminal:<id>}:customers      HASH  txn_id -> customer_id (no script reads it since the
                                            recount goes through :latest; still written and
                                            pruned, to be dropped with the next layout change)
    fs:{terminal:<id>}:latest         ZSET  member customer_id, score the time (ms) of its newest
                                            transaction at this terminal
    fs:{terminal:<id>}:latest_txn     HASH  customer_id -> that transaction's id

    fs:{store}                        HASH  the store's generation marker (see :mod:`.generation`)
      generation     an id of this life of the store, made when it was found missing
      partitions     how many partitions the aggregators replay into it
      caught_up:<topic>:<partition>  a partition replayed to its end in this generation
      ready          set once every partition is: the store holds everything the topics do

    fs:{watermarks:<transactions topic>}  HASH  partition -> newest event time read (ms)
    fs:{watermarks:<transactions topic>}:owners  HASH  the ownership epochs (same slot)
      _counter       bumped by every assignment of partitions to an instance
      <partition>    the epoch of the partition's latest owner

Why sorted sets for terminals, and a raw history for customers:

* A terminal is where volume concentrates: one e-commerce merchant takes millions of
  transactions a month. Its windows are counts (events, and frauds among them) between two
  times, so each window edge is one ``ZCOUNT`` over a sorted set scored by event time:
  O(log n), exact to the millisecond (scores are doubles, exact for epoch milliseconds), with
  no tiling. A late event or label is one more ``ZADD``, idempotent by member; nothing is
  recounted from history. Pruning is ``ZREMRANGEBYSCORE``, O(log n + removed), at most once per
  hour of event time (:data:`PRUNE_EVERY_MS`), behind the partitions' low watermark. A request
  reads six ``ZCOUNT`` (three windows, events and frauds) whatever the terminal's size.
* A customer is one card: its history is bounded by the 30-day horizon to what one card does in
  a month, and the stream already keeps it in memory (the partitioning by customer makes it
  partition-local). The windows need sums of amounts, which sorted sets do not give; prefix
  sums would make every late event rewrite the sums after it. So the customer hash keeps its raw
  events (``e:`` fields), bounded by the horizon plus the allowed lateness, and the newest
  transaction's features precomputed. A fleet card with merchant-like volume would need prefix
  sums; none is in sight.
* A late event or label changes the stored windows of the transactions 7 to 37 days after it.
  Only a customer's newest transaction has its windows stored, so the terminal keeps its
  customers' newest transactions in ``:latest`` (one member per customer, O(log n) to keep);
  the transactions to count again are a score range of it, counted a page at a time (at most
  :data:`RECOUNT_PAGE` customers per script call, the rest left in ``_recount_after`` /
  ``_recount_through`` for the next call, whoever makes it), so no call on a busy terminal
  holds Redis for long however many customers a late label reaches.
* ``GET /predict`` reads the customer hash alone, in one ``HMGET``: the newest transaction's
  features, and its terminal windows counted by the aggregator when the transaction reached its
  terminal (and again when a late event or label changed them; see the writer).

Every key has a TTL a little beyond the furthest window's reach, so an entity that stops
transacting leaves.

The Lua scripts of this package use the names below through a header rendered from this module
(:func:`lua_header`), so this module stays the one place that names them.
"""

from __future__ import annotations

from typing import Final

from fraudstack.features.definitions import (
    CUSTOMER_FEATURES,
    TERMINAL_DELAY_MS,
    TERMINAL_WINDOWS,
    TRANSACTION_FEATURES,
)

KEY_PREFIX: Final = "fs:"

#: Customer hash fields.
EVENT_PREFIX: Final = "e:"
LAST_TXN_FIELD: Final = "_last_txn"
TERMINAL_SNAPSHOT_FIELD: Final = "_terminal"
EVENT_TS_FIELD: Final = "_event_ts"
UPDATED_AT_FIELD: Final = "_updated_at"
#: The newest transaction's customer features, packed (see :mod:`.codecs`).
CUSTOMER_FEATURES_FIELD: Final = "_customer"
#: What releases before the packed field stored instead, a field per feature (fs-v2's names, a
#: superset of fs-v1's; if a feature set ever renames one, freeze these names here): a customer
#: write deletes them from a hash that still holds the first, so an active customer's hash
#: does not keep them for ever.
RETIRED_FEATURE_FIELDS: Final = TRANSACTION_FEATURES + CUSTOMER_FEATURES

#: Terminal hash fields (besides ``_event_ts`` and ``_updated_at``).
SEQ_FIELD: Final = "_seq"
PRUNED_AT_FIELD: Final = "_pruned_at"
DROPPED_FIELD: Final = "_dropped"
RECOUNT_AFTER_FIELD: Final = "_recount_after"
RECOUNT_THROUGH_FIELD: Final = "_recount_through"
#: Customer hash field: the ownership epoch of its last writer.
EPOCH_FIELD: Final = "_epoch"
#: Owners hash field: the epoch counter.
EPOCH_COUNTER_FIELD: Final = "_counter"

#: The store's generation marker, in a slot of its own, and its fields.
STORE_KEY: Final = KEY_PREFIX + "{store}"
GENERATION_FIELD: Final = "generation"
PARTITIONS_FIELD: Final = "partitions"
CAUGHT_UP_PREFIX: Final = "caught_up:"
READY_FIELD: Final = "ready"

#: Keys live a little longer than the furthest window reaches back.
CUSTOMER_TTL_SECONDS: Final = 32 * 86_400
TERMINAL_TTL_SECONDS: Final = 39 * 86_400

#: A terminal is pruned once its cut-off has moved this far (event time) since the last prune.
PRUNE_EVERY_MS: Final = 3_600_000
#: Customers whose windows one terminal script call counts again at most (a late event or
#: label's recount): about 100 × 7 O(log n) commands, about a millisecond of Redis.
RECOUNT_PAGE: Final = 100

_CUSTOMER_HEAD: Final = KEY_PREFIX + "{customer:"
#: SCAN pattern of every customer hash (a terminal's keys carry another tag).
CUSTOMER_PATTERN: Final = _CUSTOMER_HEAD + "*}"


def customer_key(customer_id: str) -> str:
    return f"{_CUSTOMER_HEAD}{customer_id}}}"


def customer_id_of(key: bytes | str) -> str:
    """The customer id of a :func:`customer_key`."""
    text = key.decode() if isinstance(key, bytes) else key
    if not (text.startswith(_CUSTOMER_HEAD) and text.endswith("}")):
        raise ValueError(f"not a customer key: {text!r}")
    return text[len(_CUSTOMER_HEAD) : -1]


def terminal_key(terminal_id: str) -> str:
    """The terminal's bookkeeping hash."""
    return f"{KEY_PREFIX}{{terminal:{terminal_id}}}"


def terminal_events_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":events"


def terminal_labels_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":labels"


def terminal_frauds_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":frauds"


def terminal_customers_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":customers"


def terminal_latest_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":latest"


def terminal_latest_txn_key(terminal_id: str) -> str:
    return terminal_key(terminal_id) + ":latest_txn"


def terminal_keys(terminal_id: str) -> tuple[str, str, str, str, str, str, str]:
    """Every key of a terminal, in the order the terminal script takes them as ``KEYS``."""
    return (
        terminal_key(terminal_id),
        terminal_events_key(terminal_id),
        terminal_labels_key(terminal_id),
        terminal_frauds_key(terminal_id),
        terminal_customers_key(terminal_id),
        terminal_latest_key(terminal_id),
        terminal_latest_txn_key(terminal_id),
    )


def watermarks_key(transactions_topic: str) -> str:
    """The hash of each partition's newest event time, as the aggregators have read it."""
    return f"{KEY_PREFIX}{{watermarks:{transactions_topic}}}"


def owners_key(transactions_topic: str) -> str:
    """The hash of the partitions' ownership epochs (in the watermarks' slot: one script checks
    an epoch and publishes a watermark)."""
    return watermarks_key(transactions_topic) + ":owners"


def event_field(txn_id: str) -> str:
    """The customer hash field of one transaction."""
    return EVENT_PREFIX + txn_id


def lua_header() -> str:
    """The names and window lengths the Lua scripts use, as Lua locals (prepended on load)."""
    reaches = ", ".join(str(TERMINAL_DELAY_MS + length) for _, _, length in TERMINAL_WINDOWS)
    names = {
        "EVENT_TS": EVENT_TS_FIELD,
        "UPDATED_AT": UPDATED_AT_FIELD,
        "SEQ": SEQ_FIELD,
        "PRUNED_AT": PRUNED_AT_FIELD,
        "DROPPED": DROPPED_FIELD,
        "LAST_TXN": LAST_TXN_FIELD,
        "TERMINAL_SNAPSHOT": TERMINAL_SNAPSHOT_FIELD,
        "RECOUNT_AFTER": RECOUNT_AFTER_FIELD,
        "RECOUNT_THROUGH": RECOUNT_THROUGH_FIELD,
        "EPOCH": EPOCH_FIELD,
        "EPOCH_COUNTER": EPOCH_COUNTER_FIELD,
        "GENERATION": GENERATION_FIELD,
        "PARTITIONS": PARTITIONS_FIELD,
        "CAUGHT_UP_PREFIX": CAUGHT_UP_PREFIX,
        "READY": READY_FIELD,
    }
    lines = [f"local {name} = '{value}'" for name, value in names.items()]
    retired = ", ".join(f"'{name}'" for name in RETIRED_FEATURE_FIELDS)
    lines.append(f"local RETIRED_FEATURES = {{{retired}}}")
    lines.append(f"local DELAY_MS = {TERMINAL_DELAY_MS}")
    lines.append(f"local PRUNE_EVERY_MS = {PRUNE_EVERY_MS}")
    lines.append(f"local REACHES_MS = {{{reaches}}}")
    return "\n".join(lines) + "\n"

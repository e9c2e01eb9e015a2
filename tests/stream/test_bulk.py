"""The bulk loader ends where the stream would: same newest transaction, duplicates refused."""

from __future__ import annotations

import pyarrow as pa
import redis

from fraudstack.adapters.online_store.codecs import LastTransaction
from fraudstack.adapters.online_store.layout import LAST_TXN_FIELD, customer_key
from fraudstack.aggregate.bulk import load_table
from fraudstack.aggregate.settings import AggregateSettings


def test_ties_and_duplicates_are_resolved_as_the_stream_resolves_them(
    pipeline_settings: AggregateSettings,
) -> None:
    ts = 1_522_540_800_000
    table = pa.table(
        {
            # two transactions at the same time, the larger id first; then a duplicate row
            "txn_id": ["bulk-b", "bulk-a", "bulk-b"],
            "ts": [ts, ts, ts],
            "customer_id": ["c-bulk", "c-bulk", "c-bulk"],
            "terminal_id": ["t-bulk-b", "t-bulk-a", "t-bulk-x"],
            "amount": [2.0, 1.0, 9.0],
        }
    )
    load_table(pipeline_settings.redis_url, table)
    client = redis.Redis.from_url(pipeline_settings.redis_url)
    stored = client.hget(customer_key("c-bulk"), LAST_TXN_FIELD)
    client.close()
    assert stored is not None
    # the newest by (ts, txn_id) is bulk-b, and its duplicate row changed nothing
    assert LastTransaction.decode(stored) == LastTransaction("bulk-b", ts, 200, "t-bulk-b")

"""The KRaft cluster id handed to Kafka's storage tool on its command line."""

from __future__ import annotations

import base64

from fraudstack.devstack.kafka_server import _cluster_id


def test_cluster_ids_are_16_random_bytes_that_never_look_like_an_option() -> None:
    # one plain draw in 64 starts with "-", which the storage tool's parser takes for an option
    ids = [_cluster_id() for _ in range(5_000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)

#!/usr/bin/env python3
"""Print a consumer group's committed offsets for one topic, read by an independent client.

    committed.py --bootstrap HOST:PORT --group G --topic T [--partitions N] [--timeout S]

stdout (one line of JSON), exit 0:

    {"topic": "T", "offsets": {"0": 123, "1": -1001, ...}}

-1001 (OFFSET_INVALID) means "no committed offset" for that partition. The offset is
Kafka's committed offset, i.e. the next record to read (last processed + 1).

Reads with confluent-kafka (its own bundled librdkafka, independent of the Rust crate's):
AdminClient.list_consumer_group_offsets (OffsetFetch through the admin API) first, and
Consumer.committed (OffsetFetch from a consumer that never subscribes, so it does not
join or disturb the group) as a fallback. Partitions are the topic's partitions from
metadata unless --partitions N is given (then 0..N-1).

On failure: a message on stderr and exit 2.

Run with the project venv: .tools/venv/bin/python scripts/committed.py ...
(scripts/setup-python.sh creates it).
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_FAIL = 2


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"committed.py: error: {msg}", file=sys.stderr)
    sys.exit(EXIT_FAIL)


def partitions_of(bootstrap: str, topic: str, timeout: float) -> list[int]:
    from confluent_kafka.admin import AdminClient

    # Never auto-create the topic by asking for it (Tansu auto-creates on Metadata when allowed).
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "allow.auto.create.topics": False})
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None:
        raise RuntimeError(f"topic {topic!r} not in metadata")
    if t.error is not None:
        raise RuntimeError(f"topic {topic!r}: {t.error}")
    if not t.partitions:
        raise RuntimeError(f"topic {topic!r} has no partitions")
    return sorted(t.partitions)


def via_admin(bootstrap: str, group: str, topic: str, parts: list[int], timeout: float) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
    futs = admin.list_consumer_group_offsets([req], request_timeout=timeout)
    res = futs[group].result(timeout=timeout + 5)
    out: dict[int, int] = {}
    for tp in res.topic_partitions:
        if tp.error is not None:
            raise RuntimeError(f"{tp.topic}[{tp.partition}]: {tp.error}")
        out[tp.partition] = tp.offset
    return out


def via_consumer(bootstrap: str, group: str, topic: str, parts: list[int], timeout: float) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        res = c.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
    finally:
        c.close()
    out: dict[int, int] = {}
    for tp in res:
        if tp.error is not None:
            raise RuntimeError(f"{tp.topic}[{tp.partition}]: {tp.error}")
        out[tp.partition] = tp.offset
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True, help="HOST:PORT")
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, help="read partitions 0..N-1 (default: from metadata)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    ap.add_argument(
        "--method",
        choices=["auto", "admin", "consumer"],
        default="auto",
        help="auto: admin API, falling back to Consumer.committed (default)",
    )
    a = ap.parse_args(argv)

    try:
        import confluent_kafka  # noqa: F401
    except ImportError as e:
        # Called with a plain python3: re-run with the project venv if there is one.
        import os

        venv_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".tools", "venv", "bin", "python")
        if os.access(venv_py, os.X_OK) and not os.environ.get("OFFSET_GUARD_REEXEC"):
            os.environ["OFFSET_GUARD_REEXEC"] = "1"
            os.execv(venv_py, [venv_py, os.path.abspath(__file__), *sys.argv[1:]])
        fail(f"confluent-kafka not importable ({e}); run scripts/setup-python.sh and use .tools/venv/bin/python")

    if a.partitions is not None and a.partitions < 1:
        fail("--partitions must be >= 1")
    try:
        parts = list(range(a.partitions)) if a.partitions else partitions_of(a.bootstrap, a.topic, a.timeout)
    except Exception as e:  # noqa: BLE001
        fail(f"cannot read partitions of {a.topic!r} from {a.bootstrap}: {e}")

    errors = []
    offsets = None
    methods = {"auto": [via_admin, via_consumer], "admin": [via_admin], "consumer": [via_consumer]}[a.method]
    for m in methods:
        try:
            offsets = m(a.bootstrap, a.group, a.topic, parts, a.timeout)
            break
        except Exception as e:  # noqa: BLE001
            errors.append(f"{m.__name__}: {type(e).__name__}: {e}")
            if len(methods) > 1:
                print(f"committed.py: {errors[-1]}", file=sys.stderr)
    if offsets is None:
        fail(f"cannot read committed offsets of group {a.group!r} topic {a.topic!r}: " + "; ".join(errors))

    missing = [p for p in parts if p not in offsets]
    if missing:
        fail(f"broker returned no offset for partitions {missing}")
    print(json.dumps({"topic": a.topic, "offsets": {str(p): offsets[p] for p in parts}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

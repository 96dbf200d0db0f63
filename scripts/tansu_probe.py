#!/usr/bin/env python3
"""Probe how a real broker (Tansu, via scripts/broker.sh) behaves for offset-guard's commit path.

    .tools/venv/bin/python scripts/tansu_probe.py [EXPERIMENT ...]

Experiments (default: all, in this order):
  basic        3-partition topic, 100 records, group consume, sync commit, read back with
               committed.py and list_consumer_group_offsets
  range        2-consumer rebalance, partition.assignment.strategy=range, commit inside on_revoke
  coop         same with cooperative-sticky
  foreign      commit an offset for a partition the member does not own
  session      which session.timeout.ms values the broker accepts; first-join time
  kill         a SIGKILLed member's partitions move to the survivor after the session timeout
  restart      stop + start the broker (memory storage) on the same port: are commits kept?

Starts the broker with scripts/broker.sh (reuses a running one) and leaves it running
except after `restart` (which restarts it). Python confluent-kafka is the only client.
Prints one line per observation: `[t=SECONDS] experiment: text`.
"""

from __future__ import annotations

import faulthandler
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
BROKER_SH = os.path.join(HERE, "broker.sh")
T0 = time.monotonic()


def say(exp: str, msg: str) -> None:
    print(f"[t={time.monotonic() - T0:7.2f}] {exp}: {msg}", flush=True)


def broker(cmd: str, port: int | None = None) -> str:
    env = dict(os.environ)
    if port is not None:
        env["TANSU_PORT"] = str(port)
    out = subprocess.run([BROKER_SH, cmd], check=True, capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("OFFSET_GUARD_BOOTSTRAP="):
            return line.split("=", 1)[1]
    return ""


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bs: str, topic: str, partitions: int = 3) -> None:
    a = AdminClient({"bootstrap.servers": bs})
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def produce(bs: str, topic: str, n: int = 100, partitions: int = 3) -> dict[int, int]:
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5})
    counts: dict[int, int] = {}
    for i in range(n):
        part = i % partitions
        p.produce(topic, value=f"v{i}".encode(), key=f"k{i}".encode(), partition=part)
        counts[part] = counts.get(part, 0) + 1
    left = p.flush(15)
    assert left == 0, f"{left} records not delivered"
    return counts


def committed_py(bs: str, group: str, topic: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "committed.py"), "--bootstrap", bs, "--group", group, "--topic", topic],
        capture_output=True,
        text=True,
    )
    return r.returncode, r.stdout.strip(), r.stderr.strip()


def admin_offsets(bs: str, group: str, topic: str, parts: int = 3) -> dict[int, int]:
    a = AdminClient({"bootstrap.servers": bs})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(parts)])
    res = a.list_consumer_group_offsets([req], request_timeout=10)[group].result(15)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def conf(bs: str, group: str, **extra) -> dict:
    c = {
        "bootstrap.servers": bs,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    c.update(extra)
    return c


class Member:
    """A consumer polled on its own thread, recording assignment events with timestamps."""

    def __init__(self, exp, name, bs, group, topic, commit_on_revoke=False, **extra):
        self.exp, self.name, self.topic = exp, name, topic
        self.commit_on_revoke = commit_on_revoke
        self.c = Consumer(conf(bs, group, **extra))
        self.assigned: set[int] = set()
        self.next_off: dict[int, int] = {}  # partition -> last consumed + 1
        self.events: list[tuple[float, str, list[int]]] = []
        self.revoke_commit_results: list[str] = []
        self.stop = threading.Event()
        self.requests: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.t_start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_assign(self, c, parts):
        ps = sorted(p.partition for p in parts)
        with self.lock:
            self.assigned |= set(ps)
            self.events.append((time.monotonic(), "assign", ps))
        say(self.exp, f"{self.name} assign {ps} after {time.monotonic() - self.t_start:.2f}s "
                      f"now owns {sorted(self.assigned)}")

    def _on_revoke(self, c, parts):
        ps = sorted(p.partition for p in parts)
        say(self.exp, f"{self.name} revoke {ps} after {time.monotonic() - self.t_start:.2f}s")
        if self.commit_on_revoke:
            offs = [TopicPartition(self.topic, p, self.next_off[p]) for p in ps if p in self.next_off]
            if offs:
                t = time.monotonic()
                try:
                    res = c.commit(offsets=offs, asynchronous=False)
                    r = "OK " + str([(x.partition, x.offset, x.error) for x in res])
                except KafkaException as e:
                    r = f"FAILED {e.args[0]}"
                self.revoke_commit_results.append(r)
                say(self.exp, f"{self.name} commit in on_revoke {[(o.partition, o.offset) for o in offs]}: "
                              f"{r} in {time.monotonic() - t:.3f}s")
        with self.lock:
            self.assigned -= set(ps)
            self.events.append((time.monotonic(), "revoke", ps))

    def _on_lost(self, c, parts):
        ps = sorted(p.partition for p in parts)
        say(self.exp, f"{self.name} LOST {ps}")
        with self.lock:
            self.assigned -= set(ps)
            self.events.append((time.monotonic(), "lost", ps))

    def start(self):
        self.t_start = time.monotonic()
        self.c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            # Commits run on this (the polling) thread: with confluent-kafka-python 2.16.1 a
            # synchronous commit from a second thread while this one sits in poll() never
            # sends its OffsetCommit (observed; a client-side behaviour, not the broker's).
            while not self.requests.empty():
                offs, reply = self.requests.get()
                try:
                    reply.put(self.c.commit(offsets=offs, asynchronous=False))
                except Exception as ex:  # noqa: BLE001
                    reply.put(ex)
            m = self.c.poll(0.1)
            if m is None:
                continue
            if m.error():
                self.errors.append(str(m.error()))
                continue
            with self.lock:
                self.next_off[m.partition()] = m.offset() + 1

    def commit_sync(self, offsets=None):
        with self.lock:
            offs = offsets or [TopicPartition(self.topic, p, o) for p, o in self.next_off.items() if p in self.assigned]
        reply: queue.Queue = queue.Queue()
        self.requests.put((offs, reply))
        r = reply.get(timeout=60)
        if isinstance(r, Exception):
            raise r
        return r

    def owned(self):
        with self.lock:
            return set(self.assigned)

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.c.close()


def wait_until(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------- experiments


def exp_basic(bs):
    e = "basic"
    topic, group = uniq("basic"), uniq("g-basic")
    create_topic(bs, topic, 3)
    counts = produce(bs, topic, 100, 3)
    say(e, f"topic {topic} (3 partitions), produced 100 records: per partition {counts}")
    m = Member(e, "A", bs, group, topic).start()
    ok = wait_until(lambda: sum(m.next_off.values()) >= 100 and len(m.next_off) == 3, 30)
    say(e, f"consumed all 100: {ok}; next offsets {dict(sorted(m.next_off.items()))}")
    t = time.monotonic()
    res = m.commit_sync()
    say(e, f"sync commit -> {[(x.partition, x.offset, x.error) for x in res]} in {time.monotonic() - t:.3f}s")
    rc, out, err = committed_py(bs, group, topic)
    say(e, f"committed.py rc={rc} stdout={out} stderr={err!r}")
    say(e, f"AdminClient.list_consumer_group_offsets -> {admin_offsets(bs, group, topic)}")
    m.close()
    a = AdminClient({"bootstrap.servers": bs})
    try:
        gl = a.list_consumer_groups(request_timeout=10).result(15)
        say(e, f"list_consumer_groups: {[g.group_id for g in gl.valid]} errors={gl.errors}")
    except Exception as ex:  # noqa: BLE001
        say(e, f"list_consumer_groups FAILED: {ex}")
    try:
        d = a.describe_consumer_groups([group], request_timeout=10)[group].result(15)
        say(e, f"describe_consumer_groups: state={d.state} members={len(d.members)} assignor={d.partition_assignor!r}")
    except Exception as ex:  # noqa: BLE001
        say(e, f"describe_consumer_groups FAILED: {ex}")


def exp_rebalance(bs, strategy, e):
    topic, group = uniq(e), uniq("g-" + e)
    create_topic(bs, topic, 3)
    produce(bs, topic, 100, 3)
    extra = {"partition.assignment.strategy": strategy}
    a = Member(e, "A", bs, group, topic, commit_on_revoke=True, **extra).start()
    wait_until(lambda: len(a.owned()) == 3, 30)
    say(e, f"A first join done: owns {sorted(a.owned())}")
    wait_until(lambda: sum(a.next_off.values()) >= 100, 30)
    say(e, f"A consumed 100 (not committed yet): {dict(sorted(a.next_off.items()))}")
    t_join = time.monotonic()
    b = Member(e, "B", bs, group, topic, commit_on_revoke=True, **extra).start()
    done = wait_until(lambda: len(a.owned()) + len(b.owned()) == 3 and a.owned() and b.owned(), 60)
    say(e, f"rebalance settled={done} in {time.monotonic() - t_join:.2f}s after B subscribed: "
           f"A={sorted(a.owned())} B={sorted(b.owned())}")
    say(e, f"A revoke-commit results: {a.revoke_commit_results}")
    time.sleep(0.5)
    say(e, f"committed after rebalance: {admin_offsets(bs, group, topic)}")
    say(e, f"B started at (next offsets): {dict(sorted(b.next_off.items()))} (expect == A's committed for B's partitions)")
    for m in (b, a):
        m.close()
    return a, b


def exp_foreign(bs):
    e = "foreign"
    topic, group = uniq("foreign"), uniq("g-foreign")
    create_topic(bs, topic, 3)
    produce(bs, topic, 30, 3)
    a = Member(e, "A", bs, group, topic).start()
    wait_until(lambda: len(a.owned()) == 3, 30)
    b = Member(e, "B", bs, group, topic).start()
    wait_until(lambda: a.owned() and b.owned() and len(a.owned()) + len(b.owned()) == 3, 60)
    foreign = sorted(b.owned())[0]
    say(e, f"A owns {sorted(a.owned())}, B owns {sorted(b.owned())}; A commits offset 7 for B's partition {foreign}")
    try:
        res = a.commit_sync([TopicPartition(topic, foreign, 7)])
        say(e, f"A commit for foreign partition -> {[(x.partition, x.offset, x.error) for x in res]}")
    except KafkaException as ex:
        say(e, f"A commit for foreign partition FAILED: {ex.args[0]}")
    say(e, f"committed now: {admin_offsets(bs, group, topic)}")
    # A commit for a partition of a topic that the group does not consume at all.
    other = uniq("other")
    create_topic(bs, other, 1)
    try:
        res = a.commit_sync([TopicPartition(other, 0, 3)])
        say(e, f"A commit for unsubscribed topic -> {[(x.partition, x.offset, x.error) for x in res]}")
    except KafkaException as ex:
        say(e, f"A commit for unsubscribed topic FAILED: {ex.args[0]}")
    # A commit of an offset beyond the log end.
    mine = sorted(a.owned())[0]
    try:
        res = a.commit_sync([TopicPartition(topic, mine, 1_000_000)])
        say(e, f"A commit offset 1000000 (past log end) on own partition {mine} -> {[(x.partition, x.offset, x.error) for x in res]}")
    except KafkaException as ex:
        say(e, f"A commit past log end FAILED: {ex.args[0]}")
    # A commit from a plain client that never joined the group (generation -1, empty member
    # id) while A and B are active members (Apache Kafka answers UNKNOWN_MEMBER_ID /
    # ILLEGAL_GENERATION for a non-empty group).
    c = Consumer(conf(bs, group))
    try:
        res = c.commit(offsets=[TopicPartition(topic, 1, 5)], asynchronous=False)
        say(e, f"non-member commit (never joined, group has 2 members) -> {[(x.partition, x.offset, x.error) for x in res]}")
    except KafkaException as ex:
        say(e, f"non-member commit FAILED: {ex.args[0]}")
    c.close()
    for m in (b, a):
        m.close()
    say(e, f"committed now: {admin_offsets(bs, group, topic)}")


def exp_session(bs):
    e = "session"
    topic = uniq("session")
    create_topic(bs, topic, 3)
    for st in (100, 1000, 3000, 6000, 45000):
        group = uniq("g-session")
        m = Member(e, f"st={st}", bs, group, topic, **{"session.timeout.ms": st,
                                                        "heartbeat.interval.ms": min(500, max(st // 3, 10))})
        m.start()
        ok = wait_until(lambda: len(m.owned()) == 3 or m.errors, max(20, st / 1000 / 2 + 10))
        say(e, f"session.timeout.ms={st}: joined={len(m.owned()) == 3} first join took "
               f"{(m.events[0][0] - m.t_start) if m.events else float('nan'):.2f}s errors={m.errors[:2]}")
        m.close()


KILL_CHILD = r"""
import sys, time
from confluent_kafka import Consumer
bs, group, topic, st = sys.argv[1:5]
c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
              "session.timeout.ms": int(st), "heartbeat.interval.ms": 300,
              "partition.assignment.strategy": "range"})
c.subscribe([topic], on_assign=lambda c, p: print("ASSIGNED", sorted(x.partition for x in p), flush=True))
while True:
    c.poll(0.1)
"""


def exp_kill(bs):
    e = "kill"
    for st in (3000, 6000):
        topic, group = uniq("kill"), uniq("g-kill")
        create_topic(bs, topic, 3)
        a = Member(e, "A", bs, group, topic, **{"session.timeout.ms": st, "heartbeat.interval.ms": 300,
                                                "partition.assignment.strategy": "range"}).start()
        wait_until(lambda: len(a.owned()) == 3, 30)
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, bs, group, topic, str(st)],
                                 stdout=subprocess.PIPE, text=True)
        line = child.stdout.readline().strip()
        wait_until(lambda: a.owned() and len(a.owned()) < 3, 30)
        say(e, f"session.timeout.ms={st}: child pid {child.pid} got {line!r}; A owns {sorted(a.owned())}")
        t_kill = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        moved = wait_until(lambda: len(a.owned()) == 3, st / 1000 * 4 + 30)
        say(e, f"session.timeout.ms={st}: after SIGKILL of the other member, A owns all 3 = {moved} "
               f"after {time.monotonic() - t_kill:.2f}s")
        a.close()


def exp_restart(bs):
    e = "restart"
    topic, group = uniq("restart"), uniq("g-restart")
    create_topic(bs, topic, 3)
    produce(bs, topic, 30, 3)
    m = Member(e, "A", bs, group, topic).start()
    wait_until(lambda: sum(m.next_off.values()) >= 30, 30)
    m.commit_sync()
    m.close()
    say(e, f"before restart: committed {admin_offsets(bs, group, topic)}")
    port = int(bs.rsplit(":", 1)[1])
    t = time.monotonic()
    broker("stop")
    bs2 = broker("start", port)
    say(e, f"broker stop+start on same port took {time.monotonic() - t:.2f}s -> {bs2}")
    md = AdminClient({"bootstrap.servers": bs2, "allow.auto.create.topics": False}).list_topics(timeout=10)
    say(e, f"after restart: topic exists={topic in md.topics}, topics={sorted(md.topics)}")
    rc, out, err = committed_py(bs2, group, topic)
    say(e, f"after restart: committed.py rc={rc} stdout={out} stderr={err!r}")


def main():
    faulthandler.dump_traceback_later(600, exit=True)  # never hang forever
    exps = sys.argv[1:] or ["basic", "range", "coop", "foreign", "session", "kill", "restart"]
    bs = broker("start")
    say("setup", f"broker at {bs}; confluent-kafka {__import__('confluent_kafka').__version__}, "
                 f"librdkafka {__import__('confluent_kafka').libversion()[0]}")
    for x in exps:
        t = time.monotonic()
        if x == "basic":
            exp_basic(bs)
        elif x == "range":
            exp_rebalance(bs, "range", "range")
        elif x == "coop":
            exp_rebalance(bs, "cooperative-sticky", "coop")
        elif x == "foreign":
            exp_foreign(bs)
        elif x == "session":
            exp_session(bs)
        elif x == "kill":
            exp_kill(bs)
        elif x == "restart":
            exp_restart(bs)
        else:
            sys.exit(f"unknown experiment {x}")
        say(x, f"--- done in {time.monotonic() - t:.2f}s")


if __name__ == "__main__":
    main()

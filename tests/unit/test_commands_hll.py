"""HyperLogLog commands against KVState: Redis's bytes (sparse and dense encodings, the
promotion between them), replies, error texts and their order, the key commands on HLL keys,
reads that change nothing, and passive replication: the effects a leader records (splices of
the bytes a PFADD changed) rebuild the very same bytes on a backup, and undo reverts them.
tests/unit/test_hll_against_redis.py runs the same commands against a real redis-server."""

from __future__ import annotations

import msgpack
import pytest

from replikv.commands import hyperloglog as hll
from replikv.features import HLL_LEVEL
from replikv.replies import OK, WRONG_TYPE, ErrorReply
from replikv.state import EFFECT_SET_STRING, EFFECT_STRING_SPLICE, KVState

from .state_driver import T0, Node, err

NOT_HLL = err(hll.NOT_HLL)
INVALID = err(hll.INVALID_HLL)
# What Redis 7.0 stores for PFADD h a b c, and for PFADD e (read with redis-cli GET).
REDIS_ABC = (b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80"
             b"`\xf3\x80P\xb1\x84K\xfb\x80BZ")
REDIS_EMPTY = b"HYLL\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x7f\xff"
# A sparse HLL whose code covers 16383 registers, not 16384.
SHORT_SPARSE = b"HYLL\x01" + bytes(10) + b"\x80" + b"\x7f\xfe"


@pytest.fixture
def node() -> Node:
    return Node()


def value(node: Node, key: str) -> bytes:
    got = node.read("GET", key)
    assert isinstance(got, bytes)
    return got


def grow_dense(node: Node, key: str, count: int = 3000) -> None:
    node.write("PFADD", key, *[f"e{i}" for i in range(count)])
    assert value(node, key)[4] == hll.ENCODING_DENSE


def test_murmurhash64a_and_the_register_pattern_are_redis_s() -> None:
    # The registers Redis's PFADD h a b c set are the ones the hash picks.
    raw = hll._sparse_raw(REDIS_ABC)
    assert sorted(hll.pattern(e) for e in (b"a", b"b", b"c")) == [
        (i, v) for i, v in enumerate(raw) if v]
    assert hll.murmurhash64a(b"", 0) == 0
    assert hll.murmurhash64a(b"0123456789abcdef", 0) != hll.murmurhash64a(b"0123456789abcdeF", 0)


def test_pfadd_stores_redis_s_sparse_bytes_and_answers_whether_it_changed(node: Node) -> None:
    assert node.write("PFADD", "h", "a", "b", "c") == 1
    assert value(node, "h") == REDIS_ABC
    assert node.write("PFADD", "h", "a", "c") == 0  # no register grows
    assert node.write("PFADD", "e") == 1  # creates the key, as Redis does
    assert value(node, "e") == REDIS_EMPTY
    assert node.write("PFADD", "e") == 0
    assert node.read("PFCOUNT", "h") == 3
    assert node.read("PFCOUNT", "e") == 0
    assert node.read("PFCOUNT", "missing") == 0


def test_a_sparse_hll_turns_dense_past_3000_bytes_and_counts_stay_close(node: Node) -> None:
    sizes = []
    for start in range(0, 4000, 250):
        node.write("PFADD", "h", *[f"x{i}" for i in range(start, start + 250)])
        sizes.append((len(value(node, "h")), value(node, "h")[4]))
    sparse = [size for size, encoding in sizes if encoding == hll.ENCODING_SPARSE]
    assert sparse and max(sparse) <= hll.SPARSE_BYTES_MAX
    assert sizes[-1] == (hll.DENSE_BYTES, hll.ENCODING_DENSE)
    count = node.read("PFCOUNT", "h")
    assert isinstance(count, int) and abs(count - 4000) < 4000 * 0.03
    assert node.write("PFADD", "h", "x1", "x2") == 0


def test_pfcount_of_several_keys_counts_their_union_and_pfmerge_stores_it(node: Node) -> None:
    node.write("PFADD", "a", *[f"a{i}" for i in range(100)])
    node.write("PFADD", "b", *[f"a{i}" for i in range(50, 150)])
    union = node.read("PFCOUNT", "a", "b", "missing")
    assert isinstance(union, int) and 145 <= union <= 155
    assert node.write("PFMERGE", "m", "a", "b", "missing") == OK
    assert node.read("PFCOUNT", "m") == union
    assert node.write("PFMERGE", "m") == OK  # the destination alone: it stays
    assert node.read("PFCOUNT", "m") == union
    assert node.write("PFMERGE", "new") == OK  # nothing to merge: an empty HLL, as in Redis
    assert value(node, "new") == REDIS_EMPTY
    grow_dense(node, "d")
    assert node.write("PFMERGE", "m", "d") == OK  # one dense source: the result is dense
    assert value(node, "m")[4] == hll.ENCODING_DENSE
    assert node.read("PFCOUNT", "m") == node.read("PFCOUNT", "a", "b", "d")


def test_a_register_above_32_makes_a_merge_destination_dense(node: Node) -> None:
    raw = bytearray(hll.REGISTERS)
    raw[5] = 40  # no sparse opcode holds it
    crafted = b"HYLL\x00" + bytes(10) + b"\x80" + hll._dense_data(bytes(raw))
    node.write("SET", "big", crafted)
    node.write("PFADD", "s", "a")
    assert node.write("PFMERGE", "s", "big") == OK
    assert value(node, "s")[4] == hll.ENCODING_DENSE
    assert hll._dense_raw(value(node, "s"))[5] == 40


def test_errors_follow_redis_in_key_order(node: Node) -> None:
    node.write("SADD", "set", "m")
    node.write("SET", "str", "hello")
    node.write("SET", "dense-too-short", b"HYLL\x00" + bytes(20))
    node.write("SET", "short", SHORT_SPARSE)
    node.write("PFADD", "ok", "a")
    for command in ("PFADD", "PFCOUNT", "PFMERGE"):
        assert node.write(command, "set") == err(WRONG_TYPE)
        assert node.write(command, "str") == NOT_HLL
        assert node.write(command, "dense-too-short") == NOT_HLL
    assert node.read("PFCOUNT", "short") == INVALID
    assert node.read("PFCOUNT", "ok", "short", "str") == INVALID  # the first bad key answers
    assert node.read("PFCOUNT", "ok", "str", "short") == NOT_HLL
    assert node.write("PFMERGE", "dest", "ok", "short") == INVALID
    assert node.read("EXISTS", "dest") == 0
    assert node.write("PFMERGE", "ok", "set") == err(WRONG_TYPE)
    assert node.write("PFADD") == err("ERR wrong number of arguments for 'pfadd' command")
    for name in ("PFDEBUG", "PFSELFTEST"):
        reply = node.write(name, "ENCODING", "ok")
        assert reply.message.startswith(f"ERR {name} is not supported by replikv")  # type: ignore[attr-defined]


def test_a_corrupted_sparse_hll_is_never_left_half_updated(node: Node) -> None:
    truncated = REDIS_EMPTY[:-1]  # an XZERO missing its second byte
    node.write("SET", "t", truncated)
    digest = node.state.digest()
    assert node.write("PFADD", "t", *[f"e{i}" for i in range(50)]) == INVALID
    assert node.state.digest() == digest


def test_pfcount_is_a_read_and_answers_a_valid_cached_cardinality(node: Node) -> None:
    node.write("PFADD", "h", "a", "b", "c")
    digest = node.state.digest()
    assert node.read("PFCOUNT", "h") == 3
    assert node.state.digest() == digest  # Redis would write the cache here; replikv reads
    # A valid cache (the top bit of byte 15 clear) is answered as it is, as Redis does: here
    # an HLL copied from a Redis that had counted it, claiming 1234.
    cached = REDIS_ABC[:8] + (1234).to_bytes(8, "little") + REDIS_ABC[16:]
    node.write("SET", "c", cached)
    assert node.read("PFCOUNT", "c") == 1234
    assert node.write("PFADD", "c", "a") == 0  # nothing changed: the cache stays valid
    assert node.read("PFCOUNT", "c") == 1234
    assert node.write("PFADD", "c", "zz") == 1
    assert node.read("PFCOUNT", "c") == 4


def test_an_hll_is_a_string_to_the_key_commands(node: Node) -> None:
    node.write("PFADD", "h", "a", "b")
    node.write("PEXPIRE", "h", 60_000)
    assert node.write("PFADD", "h", "c") == 1
    assert node.read("PTTL", "h") == 60_000  # PFADD keeps the time to live
    grow_dense(node, "h")
    assert node.read("PTTL", "h") == 60_000
    assert node.read("TYPE", "h") == "string"
    assert node.read("OBJECT", "ENCODING", "h") == b"raw"
    usage = node.read("MEMORY", "USAGE", "h")
    assert isinstance(usage, int) and usage > hll.DENSE_BYTES
    assert node.write("COPY", "h", "h2") == 1
    assert node.write("RENAME", "h2", "h3") == OK
    assert node.read("PFCOUNT", "h3") == node.read("PFCOUNT", "h")
    assert node.read("STRLEN", "h3") == hll.DENSE_BYTES
    assert node.write("APPEND", "h3", "x") == hll.DENSE_BYTES + 1
    assert node.read("PFCOUNT", "h3") == NOT_HLL


def _replay(seed_commands: list[list[bytes]]) -> tuple[KVState, KVState, list[list]]:
    leader, backup = KVState(), KVState()
    shipped: list[list] = []
    for argv in seed_commands:
        _reply, effects, _undo = leader.execute_recorded(argv, T0)
        effects = msgpack.unpackb(msgpack.packb(effects, use_bin_type=True), raw=False)
        backup.apply_effects(effects)
        shipped.append(effects)
        assert backup.digest() == leader.digest()
    return leader, backup, shipped


def test_a_backup_replaying_the_effects_has_the_leader_s_bytes() -> None:
    elements = [b"e%d" % i for i in range(3000)]
    commands = [[b"PFADD", b"h", b"a"], [b"PFADD", b"h", *elements[:100]],
                [b"PFADD", b"h", *elements],  # promoted: the whole dense string, once
                [b"PFADD", b"h", b"new-1"], [b"PFADD", b"h", b"new-2", b"new-3"],
                [b"PFADD", b"g", *elements[:40]], [b"PFMERGE", b"g", b"h"],
                [b"PFADD", b"s", b"x"], [b"PFMERGE", b"s", b"missing"],
                [b"PFMERGE", b"h", b"g"]]
    leader, backup, shipped = _replay(commands)
    for key in (b"h", b"g", b"s"):
        assert backup.execute_read([b"GET", key], T0) == leader.execute_read([b"GET", key], T0)
    # A dense PFADD ships the bytes it changed, not 12 KB.
    one = [effect for effect in shipped[3] + shipped[4]]
    assert one and all(effect[0] == EFFECT_STRING_SPLICE for effect in one)
    assert all(len(msgpack.packb(effect)) < 64 for effect in one)
    assert shipped[2][0][0] == EFFECT_STRING_SPLICE or shipped[2][0][0] == EFFECT_SET_STRING
    assert shipped[8] == [] or len(msgpack.packb(shipped[8])) < 64  # nothing or the stale bit


def test_undo_reverts_a_pfadd_and_a_pfmerge_exactly() -> None:
    state = KVState()
    state.apply_command([b"PFADD", b"h", *[b"e%d" % i for i in range(3000)]], T0)
    state.apply_command([b"PFADD", b"s", b"a"], T0)
    digest = state.digest()
    for argv in ([b"PFADD", b"h", b"zz1", b"zz2"], [b"PFMERGE", b"s", b"h"],
                 [b"PFADD", b"s", b"q"], [b"PFMERGE", b"fresh", b"s"]):
        _reply, _effects, undo = state.execute_recorded(argv, T0)
        assert state.digest() != digest
        state.undo(undo)
        assert state.digest() == digest


def test_a_string_splice_effect_is_checked_before_it_applies() -> None:
    state = KVState()
    state.apply_command([b"SET", b"k", b"abcdef"], T0)
    state.apply_effects([[EFFECT_STRING_SPLICE, b"k", [1, 2, b"XYZ", 5, 0, b"!"]]])
    assert state.execute_read([b"GET", b"k"], T0) == b"aXYZde!f"
    from replikv.invariants import InvariantViolation
    for bad in ([3, 1, b"x", 2, 0, b"y"],  # not ascending
                [0, 99, b"x"],  # past the end
                [0, 1]):  # not triples
        with pytest.raises(InvariantViolation):
            state.apply_effects([[EFFECT_STRING_SPLICE, b"k", bad]])
    with pytest.raises(InvariantViolation):
        state.apply_effects([[EFFECT_STRING_SPLICE, b"missing", [0, 0, b"x"]]])


def test_a_script_calls_pf_commands_only_once_the_cluster_is_at_their_level() -> None:
    state = KVState()
    script = [b"EVAL", b"return redis.call('PFADD', KEYS[1], 'a')", b"1", b"h"]
    reply = state.apply_command(script, T0)
    assert reply.message.startswith("ERR Unknown Redis command called from script")  # type: ignore[attr-defined]
    assert state.script_level_wanted == (HLL_LEVEL, b"PFADD")
    assert state.execute_read([b"EXISTS", b"h"], T0) == 0
    state.raise_feature_level(HLL_LEVEL)
    assert state.apply_command(script, T0) == 1
    assert state.apply_command(
        [b"EVAL", b"return redis.call('PFCOUNT', KEYS[1])", b"1", b"h"], T0) == 1


@pytest.mark.parametrize("replication", ["passive", "active"])
def test_pf_writes_and_scripts_calling_them_wait_for_every_member_at_the_hll_level(
        replication: str) -> None:
    from .node_harness import Cluster

    c = Cluster(replication=replication, levels={"n3": HLL_LEVEL - 1})
    leader = c.elect()
    assert leader != "n3", "the harness's seed elects n1 or n2"
    needs = f"needs every member of the cluster at feature level {HLL_LEVEL} or later, and n3"
    reply = c.call(leader, "PFADD", "h", "a")
    assert isinstance(reply, ErrorReply) and reply.message.startswith(f"ERR PFADD {needs}")
    script = ("redis.call('SET', 'k', 'v') "
              "return redis.call('PFADD', KEYS[1], 'a')")
    reply = c.call(leader, "EVAL", script, "1", "h")
    assert isinstance(reply, ErrorReply) and reply.message.startswith(f"ERR PFADD {needs}")
    assert c.call(leader, "GET", "k") is None  # refused whole
    for i in c.ids:
        c.nodes[i].peer_features("n3", HLL_LEVEL)
    assert c.call(leader, "EVAL", script, "1", "h") == 1  # raises the level, then runs
    assert c.call(leader, "PFADD", "h", "b") == 1
    assert c.call(leader, "PFMERGE", "m", "h") == OK
    c.tick(2)
    assert {c.nodes[i].state.feature_level for i in c.ids} == {HLL_LEVEL}
    assert len({c.nodes[i].digest() for i in c.ids}) == 1

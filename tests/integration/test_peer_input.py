"""Malformed bytes on a node's peer port (DESIGN.md: a peer's misbehaviour is dropped and
logged; malformed bytes never crash a node or change its state).

Frames are built here by hand from the format documented in replikv.wire (a 4-byte big-endian
length, then one msgpack value; the first frame is the handshake
["replikv-peer", version, cluster_id, src, dst, info]), not with replikv's own encoder. Each
case uses a fresh connection; both the leader and a follower are targeted. Afterwards the
node must still serve, its link-rejection count and log must account for every bad link, no
election may have happened, and the cluster must still commit writes through every node.
"""

from __future__ import annotations

import socket
import struct
import time

import msgpack
import pytest

from replikv.wire import PROTOCOL_VERSION

from .cluster import HOST, Cluster, wait_until

pytestmark = pytest.mark.timeout(60)

PROTOCOL = "replikv-peer"
VERSION = PROTOCOL_VERSION
FRAME_LIMIT = 256 * 1024 * 1024  # Limits.max_peer_frame_bytes


def frame(value: object) -> bytes:
    data = msgpack.packb(value, use_bin_type=True)
    return struct.pack(">I", len(data)) + data


def handshake(cluster_id: str, src: str, dst: str, info: dict | None = None) -> bytes:
    return frame([PROTOCOL, VERSION, cluster_id, src, dst, info or {}])


def vote_request(term: int, src: str) -> list:
    # [kind 1, term, src, last_log_index, last_log_term, pre_vote, transfer]
    return [1, term, src, 0, 0, True, False]


def bad_peer_cases(cluster: Cluster, target: str) -> list[tuple[str, bytes, str]]:
    """(name, bytes, the reason the node's log must give) for links the node must drop."""
    cluster_id = cluster.status(target)["cluster_id"]
    member = next(i for i in cluster.ids if i != target)
    other = next(i for i in cluster.ids if i not in (target, member))
    # A real member's handshake, with its real advertised client address.
    hello = handshake(cluster_id, member, target,
                      {"client": f"{HOST}:{cluster.port(member)}"})
    return [
        ("HTTP request instead of a frame", b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
         "over the limit"),
        ("undecodable handshake", struct.pack(">I", 12) + b"\xc1" * 12,
         "undecodable handshake"),
        ("handshake of another protocol", frame(["redis", 1, cluster_id, member, target, {}]),
         "not a replikv peer handshake"),
        ("wrong cluster id", handshake("replikv-someoneelse", member, target),
         (f"belongs to cluster 'replikv-someoneelse', we are {cluster_id!r}; a node joining "
          "a cluster must be started with its members' id (--cluster-id ID")),
        ("unknown node id", handshake(cluster_id, "n9", target), "unknown node 'n9'"),
        ("handshake addressed to another node", handshake(cluster_id, member, "n7"),
         "thinks it is talking to 'n7'"),
        ("huge length prefix as the first frame", struct.pack(">I", 0xFFFFFFFF),
         f"frame of {0xFFFFFFFF} bytes is over the limit of {FRAME_LIMIT}"),
        ("huge length prefix after a good handshake", hello + struct.pack(">I", 0xFFFFFFFF),
         f"frame of {0xFFFFFFFF} bytes is over the limit of {FRAME_LIMIT}"),
        # A frame cut short after 6 bytes of its body, the stream going on with whole frames:
        # the node reads the declared 20 bytes across the next frame's header.
        ("truncated frame followed by more frames (misframed stream)",
         hello + struct.pack(">I", 20) + msgpack.packb(vote_request(1, member))[:6]
         + frame(vote_request(1, member)) * 3,
         "undecodable frame"),
        ("garbage frame after a good handshake", hello + struct.pack(">I", 6) + b"\xc1" * 6,
         "undecodable frame"),
        ("message claiming another sender", hello + frame(vote_request(10**6, other)),
         f"claims to come from '{other}'"),
        ("negative term", hello + frame([1, -5, member, 0, 0, True, False]),
         "term is not a non-negative 63-bit integer"),
        ("unknown message kind", hello + frame([99, 1, member]), "unknown message kind 99"),
        ("wrong field count", hello + frame([1, 1, member]), "VoteRequest has 2 fields"),
    ]


def send_and_wait_for_close(port: int, data: bytes, timeout_s: float = 5.0) -> None:
    with socket.create_connection((HOST, port), timeout=timeout_s) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed on us mid-send: dropped
        deadline = time.monotonic() + timeout_s
        for _ in range(1000):
            try:
                if s.recv(4096) == b"":
                    return
            except ConnectionResetError:
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"the node kept the link open after {data[:60]!r}")


def rejected_links(cluster: Cluster, node_id: str) -> int:
    return int(cluster.info(node_id, "stats")["peer_links_rejected"])


def test_bad_peer_input_is_dropped_and_the_cluster_keeps_committing(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    terms_before = {i: cluster.status(i)["term"] for i in cluster.ids}
    # A link that never completes its handshake must be closed too (HANDSHAKE_TIMEOUT_S=5).
    silent = socket.create_connection((HOST, cluster.nodes[leader].peer_port), timeout=10)
    silent.sendall(struct.pack(">I", 100) + b"\x96")  # a handshake frame that never completes
    silent_opened = time.monotonic()

    for target in (leader, follower):
        cases = bad_peer_cases(cluster, target)
        rejected_before = rejected_links(cluster, target)
        log_before = cluster.log_text(target).count("dropping peer link")
        r = cluster.client(target)
        for i, (name, data, _reason) in enumerate(cases):
            send_and_wait_for_close(cluster.nodes[target].peer_port, data)
            assert r.set(f"peer-abuse:{target}:{i}", name) is True, name
        # Truncated, then the connection closes: nothing to log, but nothing may break.
        with socket.create_connection((HOST, cluster.nodes[target].peer_port)) as s:
            s.sendall(struct.pack(">I", 100) + b"\x97\x01")
        assert cluster.nodes[target].alive
        expected = len(cases)
        wait_until(lambda t=target, n=expected, b=rejected_before:
                   rejected_links(cluster, t) - b >= n,
                   timeout_s=3, what=f"{target} to count {expected} rejected links")
        assert rejected_links(cluster, target) - rejected_before == expected
        log = cluster.log_text(target)
        assert log.count("dropping peer link") - log_before == len(cases)
        missing = [name for name, _data, reason in cases
                   if not any(reason in line for line in log.splitlines()
                              if "dropping peer link" in line)]
        assert not missing, f"{target}: no 'dropping peer link' line giving the reason for " \
                            f"{missing}"

    # The half-open handshake was closed by the node, not left hanging.
    silent.settimeout(max(0.1, 8.0 - (time.monotonic() - silent_opened)))
    try:
        assert silent.recv(1) == b"", "node sent bytes on a peer link"
    except ConnectionResetError:
        pass
    finally:
        silent.close()

    # Nothing reached the consensus cores: no election, same leader, same terms.
    assert cluster.leader() == leader
    assert {i: cluster.status(i)["term"] for i in cluster.ids} == terms_before
    # And the cluster still commits, through every node, and every node serves it.
    for i in cluster.ids:
        assert cluster.client(i).set(f"after-abuse-{i}", i) is True
    commit = cluster.status(leader)["commit_index"]
    for i in cluster.ids:
        cluster.wait_applied(i, commit)
    cluster.assert_values(cluster.ids, {f"after-abuse-{i}": i for i in cluster.ids})


def test_rejected_peer_link_leaves_advertised_addresses_alone(make_cluster):
    """A link that shakes hands as a member and is then dropped for a bad frame must not
    change what the node tells clients about that member (ROLE, INFO replication)."""
    cluster = make_cluster(3)
    leader = cluster.leader()
    followers = [i for i in cluster.ids if i != leader]
    cluster_id = cluster.status(leader)["cluster_id"]
    expected = sorted((HOST, str(cluster.port(f))) for f in followers)
    client = cluster.client(leader, decode_responses=True)

    def replicas() -> list:
        return sorted((host, port) for host, port, _offset in client.role()[2])

    wait_until(lambda: replicas() == expected, timeout_s=5, what="ROLE to list both followers")
    impostor = followers[0]
    send_and_wait_for_close(cluster.nodes[leader].peer_port,
                            handshake(cluster_id, impostor, leader, {})
                            + struct.pack(">I", 0xFFFFFFFF))
    wait_until(lambda: "over the limit" in cluster.log_text(leader), timeout_s=3,
               what="the link to be dropped")
    assert replicas() == expected, (
        f"after a link claiming to be {impostor} was dropped for an oversized frame, ROLE on "
        f"the leader lists {replicas()} instead of {expected}")


def test_a_question_for_the_cluster_id_gets_the_id_and_nothing_else(make_cluster):
    # A node joining without --cluster-id asks with an empty cluster id; the answer is the only
    # frame a node ever writes on its peer port, and the link carries nothing after it.
    cluster = make_cluster(3)
    leader = cluster.leader()
    cluster_id = cluster.status(leader)["cluster_id"]
    term = cluster.status(leader)["term"]
    for target in cluster.ids:
        question = handshake("", "n9", target)
        # Anything sent after the question is never read as a message (this vote would
        # depose the leader if it were).
        with socket.create_connection((HOST, cluster.nodes[target].peer_port), timeout=5) as s:
            s.sendall(question + frame(vote_request(term + 100, "n9")))
            received = b""
            while chunk := s.recv(4096):
                received += chunk
        (length,) = struct.unpack(">I", received[:4])
        assert len(received) == 4 + length, "one frame, then the link is closed"
        assert msgpack.unpackb(received[4:]) == [PROTOCOL, "cluster-id", cluster_id]
    assert cluster.status(leader)["term"] == term
    assert cluster.leader() == leader
    assert "told" in cluster.log_text(leader) and "this cluster's id" in cluster.log_text(leader)

"""Which cluster id a node started without --cluster-id uses (`NodeServer.resolve_cluster_id`).

The default is derived from --peers; a data dir that recorded an id keeps it; a node joining
with an empty data dir asks the members (`learn_cluster_id`), which answer on their peer port.
Listeners here are small asyncio servers speaking the answer's format, so the questions and
answers go over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from replikv.config import default_cluster_id, load_settings, parse_peers
from replikv.server import peer_transport
from replikv.server.peer_transport import ask_cluster_id, learn_cluster_id
from replikv.server.runtime import NodeServer
from replikv.storage import StorageError
from replikv.storage.datadir import DataDir, stored_cluster_id
from replikv.wire import FRAME_HEADER, decode_handshake, encode_cluster_id_answer


def settings(tmp_path: Path, peers: str, **overrides: object):
    return load_settings(None, {"id": "n4", "data_dir": tmp_path / "n4",
                                "listen": "127.0.0.1:7004", "peer_listen": "127.0.0.1:7104",
                                "peers": peers, **overrides})


async def listener(answer: bytes | None, questions: list) -> asyncio.base_events.Server:
    """A member's peer port: records each question's handshake, then writes `answer` (or
    closes without one, as a node of an older version does)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
        questions.append(decode_handshake(await reader.readexactly(length)))
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def port(server: asyncio.base_events.Server) -> int:
    return server.sockets[0].getsockname()[1]


def test_a_member_is_asked_with_an_empty_cluster_id_and_its_answer_is_taken() -> None:
    async def main() -> None:
        questions: list = []
        server = await listener(encode_cluster_id_answer("replikv-abc"), questions)
        async with server:
            peers = parse_peers(f"n1=127.0.0.1:{port(server)},n4=127.0.0.1:1")
            assert await learn_cluster_id("n4", peers, timeout_s=5) == {"n1": "replikv-abc"}
        (version, cluster_id, src, dst, _info), = questions
        assert (cluster_id, src, dst) == ("", "n4", "n1")
        assert version == peer_transport.PROTOCOL_VERSION

    asyncio.run(main())


@pytest.mark.parametrize("answer", [None, b"\x00\x00\x00\x03abc",
                                    FRAME_HEADER.pack(5000) + b"x" * 5000,
                                    encode_cluster_id_answer("x")[:-1]])
def test_no_answer_or_a_bad_one_counts_as_none(answer: bytes | None) -> None:
    async def main() -> None:
        server = await listener(answer, [])
        async with server:
            peers = parse_peers(f"n1=127.0.0.1:{port(server)}")
            assert await ask_cluster_id(peers["n1"], "n4", "n1", timeout_s=2) is None

    asyncio.run(main())


def test_learning_stops_at_its_deadline_when_nobody_answers() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Nothing listens on port 1: every question fails at once, round after round.
        answers = await learn_cluster_id("n4", parse_peers("n1=127.0.0.1:1"), timeout_s=1.0)
        assert answers == {}
        return loop.time() - started

    assert 0.9 <= asyncio.run(main()) < 5


def test_a_joining_node_takes_the_members_id(tmp_path: Path) -> None:
    async def main() -> NodeServer:
        server = await listener(encode_cluster_id_answer("replikv-members"), [])
        async with server:
            member = f"n2=127.0.0.1:{port(server)}"
            node = NodeServer(settings(tmp_path, f"{member},n4=127.0.0.1:7104", join=True))
            assert node.settings.cluster_id == default_cluster_id(parse_peers(member))
            await node.resolve_cluster_id()
            return node

    node = asyncio.run(main())
    assert node.settings.cluster_id == "replikv-members"
    node.open_storage()
    assert stored_cluster_id(tmp_path / "n4") == "replikv-members"
    node.datadir.close()


def test_members_that_disagree_stop_the_node(tmp_path: Path) -> None:
    async def main() -> None:
        first = await listener(encode_cluster_id_answer("replikv-one"), [])
        second = await listener(encode_cluster_id_answer("replikv-two"), [])
        async with first, second:
            peers = (f"n2=127.0.0.1:{port(first)},n3=127.0.0.1:{port(second)},"
                     "n4=127.0.0.1:7104")
            node = NodeServer(settings(tmp_path, peers, join=True))
            with pytest.raises(StorageError, match="n2 says replikv-one, n3 says replikv-two"):
                await node.resolve_cluster_id()

    asyncio.run(main())


def test_no_answer_keeps_the_derived_id_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("replikv.server.runtime.LEARN_CLUSTER_ID_S", 0.5)
    node = NodeServer(settings(tmp_path, "n2=127.0.0.1:1,n4=127.0.0.1:7104", join=True))
    derived = node.settings.cluster_id
    with caplog.at_level(logging.WARNING):
        asyncio.run(node.resolve_cluster_id())
    assert node.settings.cluster_id == derived
    assert "no member answered" in caplog.text and "--cluster-id" in caplog.text


def test_a_data_dir_keeps_its_cluster_id_when_peers_change(tmp_path: Path) -> None:
    DataDir.open(tmp_path / "n4", node_id="n4", cluster_id="replikv-recorded").close()
    node = NodeServer(settings(tmp_path, "n2=127.0.0.1:1,n3=127.0.0.1:2,n4=127.0.0.1:7104"))
    asyncio.run(node.resolve_cluster_id())  # not joining: no question asked
    assert node.settings.cluster_id == "replikv-recorded"


def test_a_given_cluster_id_is_never_replaced(tmp_path: Path) -> None:
    DataDir.open(tmp_path / "n4", node_id="n4", cluster_id="replikv-recorded").close()
    node = NodeServer(settings(tmp_path, "n2=127.0.0.1:1,n4=127.0.0.1:7104",
                               cluster_id="replikv-given", join=True))
    asyncio.run(node.resolve_cluster_id())
    assert node.settings.cluster_id == "replikv-given"
    with pytest.raises(StorageError, match="belongs to cluster 'replikv-recorded'"):
        node.open_storage()


def test_a_damaged_meta_file_is_left_for_open_to_report(tmp_path: Path) -> None:
    (tmp_path / "n4").mkdir()
    (tmp_path / "n4" / "meta").write_bytes(b"garbage")
    assert stored_cluster_id(tmp_path / "n4") is None
    assert stored_cluster_id(tmp_path / "missing") is None

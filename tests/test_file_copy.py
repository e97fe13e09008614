"""The SFTP copy primitive against a real asyncssh SFTP server that records each write."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import ClassVar

import asyncssh

from spica_core.checksum import Hasher, file_checksum
from spica_core.demo.server import CHANNEL_PACKET
from spica_core.executor.file_copy import BLOCK, WRITE, LocalSource, SftpSource, sftp_write

#: An SFTP write request's bytes besides its data: length, type, id, handle string (asyncssh
#: and OpenSSH hand out handles of at most 8 bytes), offset and data length.
REQUEST_HEADER = 4 + 1 + 4 + (4 + 8) + 8 + 4


class _Recording(asyncssh.SFTPServer):
    """Serves ``root`` and keeps (offset, length) of every write it is asked for."""

    writes: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan, chroot=chan.get_extra_info("root"))

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        type(self).writes.append((offset, len(data)))
        return super().write(file_obj, offset, data)  # type: ignore[return-value]


async def _copy(root: Path, source: Path) -> tuple[Hasher, Hasher]:
    """``source`` to ``copy.fits`` on the server, then that file relayed to ``relay.fits``
    (as from one node to another): the hashers of both copies."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    class _Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            conn.set_extra_info(root=str(root))

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return key.public_data == client_key.public_data

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=_Server,
        server_host_keys=[host_key],
        sftp_factory=_Recording,
        max_pktsize=CHANNEL_PACKET,
        password_auth=False,
        kbdint_auth=False,
    )
    port = server.sockets[0].getsockname()[1]
    hasher, relayed = Hasher(), Hasher()
    try:
        async with (
            asyncssh.connect(
                "127.0.0.1",
                port,
                username="spica",
                client_keys=[client_key],
                known_hosts=([host_key.convert_to_public()], [], []),
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            await sftp_write(sftp, LocalSource(source), "copy.fits", hasher)
            handle = await sftp.open("copy.fits", "rb", encoding=None)
            await sftp_write(sftp, SftpSource(handle), "relay.fits", relayed)
    finally:
        server.close()
        await server.wait_closed()
    return hasher, relayed


def test_blocks_go_as_whole_requests_that_fit_one_channel_packet(tmp_path: Path) -> None:
    """No write is cut into a full channel packet and a sliver the node's server must join
    again: every request but the file's last carries exactly WRITE bytes, and a request
    fits a demo node's channel packet whole."""
    source = tmp_path / "811001p.fits"
    size = 3 * BLOCK + 12_345
    source.write_bytes(os.urandom(size))
    root = tmp_path / "node"
    root.mkdir()
    _Recording.writes = []

    hasher, relayed = asyncio.run(_copy(root, source))

    for copy, copy_hasher in (("copy.fits", hasher), ("relay.fits", relayed)):
        assert (root / copy).read_bytes() == source.read_bytes(), copy
        assert (copy_hasher.value(), copy_hasher.size) == file_checksum(source), copy
    # The writes of both copies, each the same sequence of offsets and lengths.
    writes = sorted(_Recording.writes)
    assert writes[::2] == writes[1::2]
    writes = writes[::2]
    assert [offset for offset, _ in writes] == list(range(0, size, WRITE))
    assert {length for _, length in writes[:-1]} == {WRITE}
    assert writes[-1][1] == size % WRITE
    assert WRITE + REQUEST_HEADER <= CHANNEL_PACKET

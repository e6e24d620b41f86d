"""The bare HTTP spawner: bench/http.py's baseline for "HTTP trigger to ended run".

Standard library only (asyncio streams), one process, one event loop, no
framework, no database, no log: `POST /api/tasks/<name>/run` spawns
`/bin/sh -e -c /bin/true` with its stdout and stderr on pipes (as runyard
runs a task) and answers 201 once the process exists; the pipes are read to
their end and the process reaped in the background. `GET /ended` answers how
many of the processes have ended. HTTP/1.1 keep-alive; requests with a body
are read by their Content-Length.

    python bench/_bare_spawner.py PORT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

ARGV = ("/bin/sh", "-e", "-c", "/bin/true")


class Spawner:
    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self.reaping: set[asyncio.Task[None]] = set()

    async def spawn(self) -> int:
        process = await asyncio.create_subprocess_exec(
            *ARGV,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.started += 1
        task = asyncio.create_task(self.reap(process))
        self.reaping.add(task)
        task.add_done_callback(self.reaping.discard)
        return self.started

    async def reap(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        await asyncio.gather(process.stdout.read(), process.stderr.read())
        await process.wait()
        self.ended += 1

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                if method == "POST" and path.startswith("/api/tasks/") and path.endswith("/run"):
                    number = await self.spawn()
                    status, body = "201 Created", {"id": str(number), "status": "running"}
                elif method == "GET" and path == "/ended":
                    status, body = "200 OK", {"started": self.started, "ended": self.ended}
                else:
                    status, body = "404 Not Found", {"detail": "Not Found"}
                payload = json.dumps(body).encode()
                writer.write(
                    f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        finally:
            writer.close()


def use_pidfd_child_watcher() -> None:
    """As runyard does on Python 3.11: pidfds, not a waitpid thread per child."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.get_event_loop_policy().set_child_watcher(watcher)


async def main(port: int) -> None:
    use_pidfd_child_watcher()
    spawner = Spawner()
    server = await asyncio.start_server(spawner.serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

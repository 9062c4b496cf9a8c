#!/usr/bin/env python3
"""Hold many idle PostgreSQL client connections open (bench/run.sh --memory).

Raw sockets and asyncio, no driver: each connection sends a StartupMessage, logs in with
SCRAM-SHA-256 (the only method it accepts, so a proxy that fell back to something weaker
fails the run), reads up to ReadyForQuery and then stays idle.

Steps, each announced on stdout as one line the caller waits for:

  CONNECTED ok=N failed=N seconds=S      every connection is logged in and idle
  (the caller samples the proxy; then creates RELEASE_DIR/query)
  QUERIED ok=N failed=N seconds=S        every connection ran `SELECT 1` once
  (the caller samples again; then creates RELEASE_DIR/close)
  CLOSED                                 every connection sent Terminate and closed

Usage: idle_clients.py HOST PORT USER DATABASE COUNT CONCURRENCY RELEASE_DIR
(the password comes from PGPASSWORD).
"""

import asyncio
import base64
import hashlib
import hmac
import os
import struct
import sys
import time

SALTED = {}  # (salt, iterations) -> salted password: the client's own PBKDF2, done once


def message(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


async def read_message(reader):
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!i", head[1:])[0]
    return tag, await reader.readexactly(length - 4)


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return f"{fields.get(b'S', '?')} {fields.get(b'C', '?')}: {fields.get(b'M', '?')}"


class Client:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def expect(self, *tags):
        tag, body = await read_message(self.reader)
        if tag == b"E":
            raise RuntimeError(error_text(body))
        if tag not in tags:
            raise RuntimeError(f"unexpected message {tag!r}")
        return tag, body

    async def login(self, user, database, password):
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!i", 196608) + params
        self.writer.write(struct.pack("!i", len(body) + 4) + body)
        _, body = await self.expect(b"R")
        code = struct.unpack("!i", body[:4])[0]
        if code != 10 or b"SCRAM-SHA-256\0" not in body[4:]:
            raise RuntimeError(f"the server asked for authentication method {code}, not SCRAM")
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self.writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        _, body = await self.expect(b"R")
        if struct.unpack("!i", body[:4])[0] != 11:
            raise RuntimeError("expected SASLContinue")
        server_first = body[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise RuntimeError("server nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = SALTED.get((salt, iterations))
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
            SALTED[(salt, iterations)] = salted
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
        self.writer.write(message(b"p", final))
        _, body = await self.expect(b"R")
        if struct.unpack("!i", body[:4])[0] != 12:
            raise RuntimeError("expected SASLFinal")
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        expected = base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest())
        if body[4:].strip() != b"v=" + expected:
            raise RuntimeError("the server's SCRAM signature is wrong")
        _, body = await self.expect(b"R")
        if struct.unpack("!i", body[:4])[0] != 0:
            raise RuntimeError("expected AuthenticationOk")
        while True:
            tag, _ = await self.expect(b"S", b"K", b"N", b"Z")
            if tag == b"Z":
                return

    async def select_one(self):
        self.writer.write(message(b"Q", b"SELECT 1\0"))
        rows = 0
        while True:
            tag, _ = await self.expect(b"T", b"D", b"C", b"N", b"S", b"Z")
            if tag == b"D":
                rows += 1
            if tag == b"Z":
                if rows != 1:
                    raise RuntimeError(f"SELECT 1 gave {rows} rows")
                return

    async def close(self):
        try:
            self.writer.write(message(b"X", b""))
            await self.writer.drain()
        finally:
            self.writer.close()


async def wait_for(path):
    while not os.path.exists(path):
        await asyncio.sleep(0.2)


async def main():
    host, port, user, database, count, concurrency, release = sys.argv[1:8]
    port, count, concurrency = int(port), int(count), int(concurrency)
    password = os.environ["PGPASSWORD"]
    gate = asyncio.Semaphore(concurrency)
    errors = {}

    def failed(exc):
        text = f"{type(exc).__name__}: {exc}"
        errors[text] = errors.get(text, 0) + 1

    async def connect():
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
                client = Client(reader, writer)
                await asyncio.wait_for(client.login(user, database, password), 120)
                return client
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failed(exc)
                return None

    async def query(client):
        async with gate:
            try:
                await asyncio.wait_for(client.select_one(), 120)
                return True
            except Exception as exc:  # noqa: BLE001
                failed(exc)
                return False

    def report(line):
        print(line, flush=True)
        for text, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  error x{n}: {text}", flush=True)
        errors.clear()

    start = time.monotonic()
    clients = [c for c in await asyncio.gather(*(connect() for _ in range(count))) if c]
    report(f"CONNECTED ok={len(clients)} failed={count - len(clients)} "
           f"seconds={time.monotonic() - start:.1f}")
    await wait_for(os.path.join(release, "query"))
    start = time.monotonic()
    ok = sum(await asyncio.gather(*(query(c) for c in clients)))
    report(f"QUERIED ok={ok} failed={len(clients) - ok} seconds={time.monotonic() - start:.1f}")
    await wait_for(os.path.join(release, "close"))
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

#!/usr/bin/env python3
"""A tiny SMTP sink for trying Ward on one machine (Python standard library only).

Listens on 127.0.0.1:2526 (or the address given), accepts every message and
prints its envelope and size, and, with --show, the message itself. It does
not offer STARTTLS, so point Ward at it with tls_policy = "may"
(conf/try-it.toml does).

    python3 tools/sink.py [--listen 127.0.0.1:2526] [--show]
"""
import argparse
import asyncio


async def session(reader, writer, show):
    def send(line):
        writer.write(line.encode() + b"\r\n")

    send("220 sink.localhost ESMTP try-it sink")
    mail_from, rcpts = None, []
    while True:
        await writer.drain()
        line = await reader.readline()
        if not line:
            break
        verb = line.decode("utf-8", "replace").strip()
        upper = verb.upper()
        if upper.startswith("EHLO"):
            send("250-sink.localhost")
            send("250-PIPELINING")
            send("250-8BITMIME")
            send("250 SMTPUTF8")
        elif upper.startswith("HELO"):
            send("250 sink.localhost")
        elif upper.startswith("MAIL FROM:"):
            mail_from, rcpts = verb[10:].split(" ")[0], []
            send("250 2.1.0 OK")
        elif upper.startswith("RCPT TO:"):
            rcpts.append(verb[8:].split(" ")[0])
            send("250 2.1.5 OK")
        elif upper == "DATA":
            send("354 go ahead")
            await writer.drain()
            data = bytearray()
            while True:
                chunk = await reader.readline()
                if not chunk or chunk == b".\r\n":
                    break
                if chunk.startswith(b".."):
                    chunk = chunk[1:]
                data += chunk
            print(f"sink: message from {mail_from} to {', '.join(rcpts)}: {len(data)} bytes", flush=True)
            if show:
                print(data.decode("utf-8", "replace"), flush=True)
            send("250 2.0.0 accepted by the sink")
        elif upper == "RSET":
            mail_from, rcpts = None, []
            send("250 2.0.0 OK")
        elif upper == "QUIT":
            send("221 2.0.0 bye")
            await writer.drain()
            break
        else:
            send("250 2.0.0 OK")
    writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:2526")
    p.add_argument("--show", action="store_true", help="print each message too")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = await asyncio.start_server(lambda r, w: session(r, w, a.show), host, int(port))
    print(f"sink: listening on {a.listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

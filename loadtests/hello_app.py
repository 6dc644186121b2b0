"""The baseline: a bare litestar + msgspec app served exactly like the API."""

from __future__ import annotations

import sys

import msgspec
import uvicorn
from litestar import Litestar, get


class Hello(msgspec.Struct):
    message: str


@get("/hello")
async def hello() -> Hello:
    return Hello(message="hello")


app = Litestar([hello], logging_config=None)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )

"""The bare framework: bench/memory.py's baseline for the daemon's idle RSS.

What any daemon built on runyard's stack holds before it does anything of its
own: FastAPI with one route, served by uvicorn (httptools on the asyncio loop, as
runyard runs it), plus SQLAlchemy Core with one SQLite engine connected.
No runyard module is imported.

    python bench/_bare_app.py PORT DATABASE_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import sqlalchemy  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

app = FastAPI()
engine = sqlalchemy.create_engine(f"sqlite:///{sys.argv[2]}")


@app.get("/health")
def health() -> dict[str, str]:
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT 1"))
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        loop="asyncio",
        http="httptools",
    )

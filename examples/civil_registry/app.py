"""The civil registry's own REST API (FastAPI over SQLite), as the demo's provider.

Its schema is deliberately unlike Accord's canonical person: nested names,
``DD/MM/YYYY`` birth dates, one-letter code lists, a ``residence`` object and
households with relation codes. It honours a ``fields`` query parameter so the
connector can push the allowed field list down, and it wants a bearer token.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from examples.synth import people

__all__ = ["create_app", "seed"]

SEX = {"female": "F", "male": "M", "other": "X"}
CIVIL = {"single": "S", "married": "M", "divorced": "D", "widowed": "W"}
RELATION = {"head": "HEAD", "spouse": "SPOUSE", "child": "CHILD"}
CITIZEN_FIELDS = (
    "ssn",
    "name",
    "dob",
    "gender",
    "civil_status",
    "residence",
    "household_ref",
    "registered_at",
)


class Name(BaseModel):
    first: str
    last: str


class Residence(BaseModel):
    street: str
    city: str
    zip: str


class Citizen(BaseModel):
    ssn: str
    name: Name
    dob: str
    gender: str
    civil_status: str
    residence: Residence
    household_ref: str
    registered_at: str


class Member(BaseModel):
    ssn: str
    relation: str


class Household(BaseModel):
    hh_id: str
    members: list[Member]
    residence: Residence


def seed(db: Path) -> None:
    """Create and fill the registry database (idempotent)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS citizen (ssn TEXT PRIMARY KEY, doc TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS household (hh_id TEXT PRIMARY KEY, doc TEXT)")
        if conn.execute("SELECT count(*) FROM citizen").fetchone()[0]:
            return
        households: dict[str, dict[str, Any]] = {}
        for p in people():
            residence = {"street": p.street, "city": p.city, "zip": p.postcode}
            doc = {
                "ssn": p.person_id,
                "name": {"first": p.given_name, "last": p.family_name},
                "dob": p.birth_date.strftime("%d/%m/%Y"),
                "gender": SEX[p.sex],
                "civil_status": CIVIL[p.marital_status],
                "residence": residence,
                "household_ref": p.household_id,
                "registered_at": p.registered_at.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            conn.execute("INSERT INTO citizen VALUES (?, ?)", (p.person_id, json.dumps(doc)))
            hh = households.setdefault(
                p.household_id, {"hh_id": p.household_id, "members": [], "residence": residence}
            )
            hh["members"].append({"ssn": p.person_id, "relation": RELATION[p.household_role]})
        conn.executemany(
            "INSERT INTO household VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in households.items()],
        )
    conn.close()


def create_app(db: Path, token: str = "civil-demo-token") -> FastAPI:
    seed(db)
    app = FastAPI(title="Civil Registry API", version="2.3.0")

    def authorised(authorization: str | None = Header(default=None)) -> None:
        if authorization != f"Bearer {token}":
            raise HTTPException(status_code=401, detail="bad token")

    def load(table: str, key: str) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            col = "ssn" if table == "citizen" else "hh_id"
            row = conn.execute(f"SELECT doc FROM {table} WHERE {col} = ?", (key,)).fetchone()
        finally:
            conn.close()
        if row is None:
            raise HTTPException(status_code=404, detail=f"{table} not found")
        doc: dict[str, Any] = json.loads(row[0])
        return doc

    def select(doc: dict[str, Any], fields: str | None) -> dict[str, Any]:
        if not fields:
            return doc
        wanted = set(fields.split(","))
        return {k: v for k, v in doc.items() if k in wanted}

    @app.get("/healthz", dependencies=[Depends(authorised)])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/api/v2/citizens/{ssn}",
        response_model=Citizen,
        response_model_exclude_unset=True,
        dependencies=[Depends(authorised)],
    )
    def citizen(ssn: str, fields: str | None = None) -> JSONResponse:
        return JSONResponse(select(load("citizen", ssn), fields))

    @app.get("/api/v2/citizens", dependencies=[Depends(authorised)])
    def citizens(
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        fields: str | None = None,
        city: str | None = None,
    ) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT ssn, doc FROM citizen WHERE ssn > ? ORDER BY ssn",
                (cursor or "",),
            ).fetchall()
        finally:
            conn.close()
        items: list[dict[str, Any]] = []
        last = None
        for ssn, raw in rows:
            doc = json.loads(raw)
            if city is not None and doc["residence"]["city"] != city:
                continue
            if len(items) == limit:
                break
            items.append(select(doc, fields))
            last = ssn
        more = len(items) == limit and last is not None and last != rows[-1][0]
        return {"items": items, "next": last if more else None}

    @app.get(
        "/api/v2/households/{hh_id}", response_model=Household, dependencies=[Depends(authorised)]
    )
    def household(hh_id: str, fields: str | None = None) -> JSONResponse:
        return JSONResponse(select(load("household", hh_id), fields))

    return app

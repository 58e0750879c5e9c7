"""The seed lesson's Todo service, written from the lesson's text, as the peer of the
benchmark: FastAPI with httpx for Dapr's HTTP API (save the todo in the state store,
then publish `todo.created`), and dapr-ext-fastapi's DaprApp for the programmatic
subscription whose handler answers SUCCESS. One uvicorn worker, as the lesson runs it.

Run: DAPR_HTTP_PORT=3500 uvicorn app:app --port 8000 --workers 1 (from this folder),
next to `spindapr sidecar --app-id seed --app-port 8000 ...`.
"""

import os
import uuid
from datetime import datetime, timezone

import httpx
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DAPR_URL = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
PUBSUB = "pubsub"
TOPIC = "todo-events"
STORE = "statestore"

app = FastAPI()
dapr_app = DaprApp(app)
client = httpx.AsyncClient(timeout=10.0)


class TodoCreate(BaseModel):
    title: str
    completed: bool = False


async def publish_event(event_type: str, todo: dict) -> None:
    event = {"event_type": event_type, "todo": todo, "occurred_at": datetime.now(timezone.utc).isoformat()}
    r = await client.post(f"{DAPR_URL}/v1.0/publish/{PUBSUB}/{TOPIC}", json=event)
    r.raise_for_status()


@app.post("/todos", status_code=201)
async def create_todo(body: TodoCreate) -> dict:
    if not body.title.strip():
        raise HTTPException(status_code=400, detail="title must not be empty")
    now = datetime.now(timezone.utc).isoformat()
    todo = {"id": str(uuid.uuid4()), "title": body.title.strip(), "completed": body.completed, "created_at": now, "updated_at": now}
    r = await client.post(f"{DAPR_URL}/v1.0/state/{STORE}", json=[{"key": f"todo:{todo['id']}", "value": todo}])
    r.raise_for_status()
    await publish_event("todo.created", todo)
    return todo


@app.get("/todos/{todo_id}")
async def get_todo(todo_id: str) -> dict:
    r = await client.get(f"{DAPR_URL}/v1.0/state/{STORE}/todo:{todo_id}")
    if r.status_code == 204 or not r.content:
        raise HTTPException(status_code=404, detail="not found")
    return r.json()


received = {"total": 0}


@dapr_app.subscribe(pubsub=PUBSUB, topic=TOPIC)
async def handle_todo_event(event: dict) -> dict:
    data = event.get("data") or {}
    # The lesson logs each event; the benchmark's peer only counts them (less work for it).
    if data.get("event_type"):
        received["total"] += 1
    return {"status": "SUCCESS"}


@app.get("/activity")
async def activity() -> dict:
    return received

"""Classroom mode's server: one app per user, each behind that user's own login, on one fair queue.

    python app.py --users class.txt [--workspace DIR] [--host H] [--port P] [--max-concurrent-runs N]

Each user's page is the whole workbench on their own workspace, at /u/<name>/ (the API at the same address:
`Client("http://host:7860/u/ada/", auth=("ada", password))`); the teacher's has a Class tab besides. Only that
user logs in there, so nobody sees, stops or queries another's runs but the teacher. The front page asks for
a name and sends the browser to its login. Logins are throttled by name and by address (workbench.accounts).
"""

from __future__ import annotations

import contextvars
import html

import fastapi
import gradio as gr
import uvicorn
from fastapi.responses import HTMLResponse, RedirectResponse

from workbench.accounts import Logins
from workbench.engine.classroom import Classroom
from workbench.rewards.tasks import upload_limit_mb
from workbench.ui import KEEP_ZOOM_JS, build_app

ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("address", default="")  # the client of this login

FRONT_PAGE = """<!doctype html><html><head><title>GRPO Workbench classroom</title><meta charset="utf-8">
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;line-height:1.5}
input,button{font-size:1.1rem;padding:.4rem}</style></head><body>
<h1>GRPO Workbench</h1><p>A classroom on this server: your own workspace, runs and rewards.</p>
<form action="go" method="get"><label>Your name <input name="name" autofocus required></label>
<button>Log in</button></form>{message}</body></html>"""


def classroom_server(classroom: Classroom, logins: Logins) -> fastapi.FastAPI:
    """The FastAPI app: the front page, and each user's workbench mounted at /u/<name>/ behind their login."""
    server = fastapi.FastAPI()

    @server.middleware("http")
    async def remember_address(request: fastapi.Request, call_next):
        ADDRESS.set(request.client.host if request.client else "")  # a login's address, for its throttle
        return await call_next(request)

    @server.get("/", response_class=HTMLResponse)
    def front(message: str = "") -> str:
        return FRONT_PAGE.replace("{message}", f"<p><b>{html.escape(message)}</b></p>" if message else "")

    @server.get("/go")
    def go(name: str) -> RedirectResponse:
        if name.strip() not in classroom.users:
            return RedirectResponse(f"/?message=No account is named {name.strip()!r} here: ask your teacher.", 303)
        return RedirectResponse(f"/u/{name.strip()}/", 303)

    for name in classroom.users:
        app = build_app(
            str(classroom.root / "users" / name), runner=classroom.runners[name], classroom=classroom, user=name
        )
        gr.mount_gradio_app(
            server,
            app,
            f"/u/{name}",
            auth=lambda user, password, name=name: logins.check(user, password, ADDRESS.get(), only=name),
            auth_message=f"The workbench of {name}: log in with your name and password.",
            js=KEEP_ZOOM_JS,
            show_error=True,
            footer_links=["api"],
            max_file_size=f"{upload_limit_mb()}mb",  # larger uploads are refused before they are saved anywhere
        )
    return server


def serve(classroom: Classroom, logins: Logins, host: str, port: int) -> None:
    print(f"classroom of {len(classroom.users)} on http://{host}:{port}/ ({classroom.scheduler.slots} runs at once)")
    app = classroom_server(classroom, logins)  # on SIGTERM: open pages and clients get 5 s, not forever
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)

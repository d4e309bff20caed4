"""The `tunesmith ui` web app: one FastAPI process serving server-rendered pages.

Every page has a stable URL; filters and sorts are query parameters. Registry changes are POSTs
carrying a per-process CSRF token. With an API key every request must carry it (header
`Authorization: Bearer KEY`, or once as `?key=KEY`, which sets a cookie). Errors render as a page
that says what is wrong; no stack trace reaches the browser.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import UserError
from tunesmith.ui import datapage, evalpage, planpage, playground, registryview, runs, spans
from tunesmith.ui.catalog import Catalog, NotFound
from tunesmith.ui.templating import env as make_env

log = logging.getLogger("tunesmith.ui")
HERE = Path(__file__).parent
KEY_COOKIE = "tunesmith_ui_key"
_RUN_SORTS = ("name", "status", "model", "method", "steps", "train_loss", "val_loss", "verdict", "created")


@dataclass
class Settings:
    runs: list[Path]
    registry: Path | None = None
    api_key: str | None = None


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="tunesmith ui", docs_url=None, redoc_url=None, openapi_url=None)
    env = make_env()
    catalog = Catalog(settings.runs)
    csrf = secrets.token_urlsafe(32)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, csrf=csrf, nav=name.split(".")[0], **ctx)
        return HTMLResponse(html, status_code=status)

    def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return render(request, "error.html.jinja", status=status, title=title, message=message)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if settings.api_key:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.cookies.get(KEY_COOKIE, "") or request.query_params.get("key", "")
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                return error_page(request, 401, "API key needed",
                                  "This tunesmith ui was started with --api-key: open it once as "
                                  "/?key=YOUR_KEY (it is then kept in a cookie) or send Authorization: Bearer.")
        try:
            response = await call_next(request)
        except Exception as e:  # the last line of defence: a message, never a traceback
            log.exception("unhandled error on %s", request.url.path)
            return error_page(request, 500, "Something went wrong", f"{type(e).__name__}: {e}")
        if settings.api_key and request.query_params.get("key"):
            response.set_cookie(KEY_COOKIE, settings.api_key, httponly=True, samesite="strict")
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound):
        return error_page(request, 404, "Not found", str(e))

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return error_page(request, 422, "Cannot show this", str(e))

    @app.exception_handler(registryview.ActionRefused)
    async def refused(request: Request, e: registryview.ActionRefused):
        return error_page(request, 409, "Refused", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = "No page at this address." if e.status_code == 404 else str(e.detail)
        return error_page(request, e.status_code, "Not found" if e.status_code == 404 else "Error", message)

    async def form(request: Request) -> dict[str, str]:
        """The POSTed form, after checking its CSRF token (a page of this app is the only place that has it)."""
        fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if not hmac.compare_digest(fields.get("csrf", "").encode(), csrf.encode()):
            raise registryview.ActionRefused("this form is stale or did not come from this page (CSRF token "
                                             "mismatch); reload the page and try again")
        return fields

    @app.get("/")
    async def home():
        return RedirectResponse("/runs", status_code=303)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, sort: str = "created", desc: int = 1):
        key = sort if sort in _RUN_SORTS else "created"
        rows = [runs.row(ref) for ref in catalog.runs()]
        # runs without the value (not evaluated, still running) stay last in either direction
        have = sorted((r for r in rows if getattr(r, key) is not None), key=lambda r: getattr(r, key),
                      reverse=bool(desc))
        rows = have + [r for r in rows if getattr(r, key) is None]
        return render(request, "runs.html.jinja", rows=rows, sort=key, desc=bool(desc), roots=catalog.roots)

    @app.get("/runs/{rid}", response_class=HTMLResponse)
    def run_page(request: Request, rid: str):
        ref = catalog.run(rid)
        results = runs.results(ref)
        return render(request, "run.html.jinja", ref=ref, card=runs.card(ref), curves=runs.curves(ref),
                      checkpoints=runs.checkpoints(ref), results=results,
                      files={f: catalog.files(ref, f) for f in ("adapter", "eval")})

    @app.get("/runs/{rid}/curves.json")
    def run_curves(rid: str):
        return JSONResponse(runs.curves(catalog.run(rid)))

    @app.get("/runs/{rid}/files/{folder}", response_class=HTMLResponse)
    def file_list(request: Request, rid: str, folder: str):
        ref = catalog.run(rid)
        return render(request, "files.html.jinja", ref=ref, folder=folder, files=catalog.files(ref, folder))

    @app.get("/runs/{rid}/files/{folder}/{name}")
    def file_get(rid: str, folder: str, name: str):
        ref = catalog.run(rid)
        path = catalog.file(ref, folder, name)
        text = path.suffix in (".json", ".jsonl", ".txt", ".yaml", ".jinja", ".md", ".html")
        # HTML is served as text: a report opened through the app must not run in the app's origin
        return FileResponse(path, media_type="text/plain; charset=utf-8" if text else "application/octet-stream",
                            filename=None if text else path.name)

    @app.get("/runs/{rid}/eval", response_class=HTMLResponse)
    def eval_page(request: Request, rid: str):
        ref = catalog.run(rid)
        results = runs.results(ref)
        if results is None:
            raise NotFound(f"run {rid} has not been evaluated yet (tunesmith eval {ref.path})")
        rules = spans.run_rules(ref.path, results.rules or ref.rundir.info().rules)
        ctx = evalpage.context(results, dict(request.query_params), rules)
        return render(request, "eval.html.jinja", ref=ref, **ctx)

    @app.get("/runs/{rid}/data", response_class=HTMLResponse)
    def data_page(request: Request, rid: str):
        ref = catalog.run(rid)
        return render(request, "data.html.jinja", ref=ref, **datapage.context(ref, dict(request.query_params)))

    @app.get("/plan", response_class=HTMLResponse)
    def plan_page(request: Request):
        params = dict(request.query_params)
        return render(request, "plan.html.jinja", be=planpage.breakeven_view(params), mem=planpage.memory_view(params),
                      adv=planpage.advisor_view(params))

    @app.get("/plan/breakeven.json")
    def plan_breakeven(request: Request):
        view = planpage.breakeven_view(dict(request.query_params))
        return JSONResponse({"html": env.get_template("breakeven_result.html.jinja").render(be=view),
                             "breakeven_requests": view["result"].breakeven_requests,
                             "breakeven_days": view["result"].breakeven_days})

    def registry_or_page(request: Request):
        reg = registryview.open_registry(settings.registry)
        if reg is None:
            return None, error_page(request, 404, "No registry",
                                    f"no registry at {settings.registry}; `tunesmith registry add RUN --name NAME "
                                    f"--registry {settings.registry}` creates one")
        return reg, None

    @app.get("/registry", response_class=HTMLResponse)
    def registry_page(request: Request, done: str = ""):
        reg, page = registry_or_page(request)
        return page or render(request, "registry.html.jinja", done=done[:300], **registryview.overview(reg))

    @app.post("/registry/promote", response_class=HTMLResponse)
    async def registry_promote(request: Request):
        fields = await form(request)
        reg, page = registry_or_page(request)
        if page:
            return page
        alias, vid = fields.get("alias", "").strip(), fields.get("version", "").strip()
        if fields.get("confirm") != "yes":
            return render(request, "promote.html.jinja", ev=registryview.evidence(reg, alias, vid))
        registryview.promote(reg, alias, vid, force=fields.get("force") == "yes")
        return RedirectResponse(f"/registry?done={quote(f'{alias} now points at {vid}')}", status_code=303)

    @app.post("/registry/rollback")
    async def registry_rollback(request: Request):
        fields = await form(request)
        reg, page = registry_or_page(request)
        if page:
            return page
        alias = fields.get("alias", "")
        registryview.rollback(reg, alias)
        target = ", ".join(v for v, _ in reg.alias(alias).targets)
        return RedirectResponse(f"/registry?done={quote(f'rolled back {alias} to {target}')}", status_code=303)

    app.mount(playground.MOUNT, playground.LazyServe(settings.registry))

    @app.get("/playground", response_class=HTMLResponse)
    def playground_page(request: Request):
        reg, page = registry_or_page(request)
        return page or render(request, "playground.html.jinja", models=playground.models(reg), mount=playground.MOUNT)

    @app.post("/playground/rules")
    async def playground_rules(request: Request):
        if not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(), csrf.encode()):
            raise registryview.ActionRefused("CSRF token mismatch; reload the page")
        body = await request.json()
        reg, page = registry_or_page(request)
        if page:
            return page
        return JSONResponse({"rules": playground.check_rules(reg, str(body.get("model", "")),
                                                             str(body.get("answer", "")), str(body.get("prompt", "")))})

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    return app

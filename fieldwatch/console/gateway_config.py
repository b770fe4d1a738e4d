"""Pushing a configuration from the console: the editor dialog, and the action endpoint it posts to.

The dialog (:class:`ConfigEditor`) starts from the last document pushed to the gateway (or an
example), checks the edit on the server with the gateway's own validation
(:func:`fieldwatch.gateway_push.preview`; checking changes nothing) and shows either what is wrong or
the unified diff against the last push. Only then does **Send** appear: it POSTs the checked
document to :data:`PUSH` with the session's CSRF token, and the endpoint checks session, token and
policy (``gateway.configure``) like every console action (:func:`.session.console_allow`) before it
validates again, records and publishes (:func:`fieldwatch.gateway_push.push`). The gateway's
answer arrives later on the Gateways page through the ``gateway_config`` event.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from nicegui import ui
from pydantic import ConfigDict, Field

from fwcore.errors import Invalid, NotFound
from fwcore.inputs import Input
from ingest.config_push import last_pushed
from ingest.gateway_fleet import GatewayView

from .. import gateway_push
from .pages import _db
from .session import ConnDep, ConsoleAccess, console_allow

router = APIRouter(include_in_schema=False)

#: The console's push endpoint (under the console's action prefix).
PUSH = "/console/actions/gateways/{gateway_id}/config"


class PushBody(Input):
    model_config = ConfigDict(extra="forbid")

    document: str = Field(max_length=gateway_push.MAX_DOCUMENT)


@router.post(PUSH)
def push_config(
    gateway_id: int,
    body: PushBody,
    request: Request,
    conn: ConnDep,
    access: Annotated[ConsoleAccess, console_allow("gateway.configure")],
) -> dict[str, object]:
    """Validate, record and publish a config as the signed-in person (422 says what to fix; nothing changes)."""
    settings = request.app.state.settings
    try:
        pushed = gateway_push.push(conn, settings, gateway_id, body.document, access.session.user.username)
    except Invalid as exc:
        raise HTTPException(422, str(exc)) from None
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except gateway_push.BrokerDown as exc:
        raise HTTPException(503, str(exc)) from None
    return {"id": pushed.id, "gateway_id": gateway_id, "version": pushed.version}


_PUSH_JS = """
<script>
window.fwPushConfig = async (path, what, documentText) => {
  const token = document.querySelector('meta[name="fw-csrf"]').content;
  let status = 0, detail = '';
  try {
    const r = await fetch(path, {method: 'POST', credentials: 'same-origin',
      headers: {'X-CSRF-Token': token, 'Content-Type': 'application/json'},
      body: JSON.stringify({document: documentText})});
    status = r.status;
    try { const body = await r.json(); detail = typeof body.detail === 'string' ? body.detail : ''; } catch (e) {}
  } catch (e) { detail = 'the server did not answer; check your connection'; }
  emitEvent('fw_action_done', {path: path, what: what, status: status, detail: detail});
};
</script>
"""


def _example(g: GatewayView) -> str:
    """A starting document when nothing was pushed yet: the gateway's identity, a version, its devices."""
    devices = [
        {"name": d.key, "host": "127.0.0.1", "port": 502, "profile": (d.profile or "pump-p100").split("@")[0]}
        for d in g.devices
    ]
    return yaml.safe_dump(
        {"site": g.site, "gateway": g.slug, "config_version": "1", "devices": devices}, sort_keys=False
    )


class ConfigEditor:
    """The push dialog of one Gateways page (one per open page, reused for each gateway)."""

    def __init__(self, actions: str) -> None:
        self.actions = actions
        self.gateway: GatewayView | None = None
        self.checked: str | None = None  # the document the shown diff is for

    def build(self) -> None:
        ui.add_head_html(_PUSH_JS)
        with ui.dialog().props("persistent") as self.dialog, ui.card().classes("fw-card w-[920px] max-w-full gap-3"):
            self.title = ui.label("").classes("text-lg font-semibold")
            ui.label(
                "The whole gateway config as YAML or JSON, with a new config_version. Only devices, config_version "
                "and remote_apply_timeout may change remotely; the rest needs an edit on the gateway and a restart."
            ).classes("text-sm fw-muted")
            self.text = (
                ui.textarea(on_change=self._edited)
                .props("outlined autogrow input-class=font-mono data-testid=config-editor")
                .classes("w-full font-mono")
            )
            self.problem = (
                ui.label("")
                .classes("text-sm text-negative whitespace-pre-wrap")
                .props("role=alert data-testid=config-problem")
            )
            self.diff = (
                ui.code("", language="diff")
                .classes("w-full max-h-[320px] overflow-auto")
                .props("data-testid=config-diff")
            )
            with ui.row().classes("w-full justify-end gap-2"):
                ui.button("Cancel", on_click=self.dialog.close).props("flat no-caps data-testid=config-cancel")
                ui.button("Check", icon="rule", on_click=self._check).props("outline no-caps data-testid=config-check")
                self.send_box = ui.row().classes("gap-2")
        self._reset()

    def _reset(self) -> None:
        self.checked = None
        self.problem.set_text("")
        self.problem.set_visibility(False)
        self.diff.set_visibility(False)
        self.send_box.clear()

    def _edited(self, _e: Any) -> None:
        if self.checked is not None and self.text.value != self.checked:
            self._reset()  # the diff shown is for another text: check again before sending

    async def open(self, g: GatewayView) -> None:
        self.gateway = g
        before = await _db(last_pushed, g.id)
        self.title.set_text(f"Push a configuration to {g.slug}")
        self.text.set_value(before.document if before else _example(g))
        self._reset()
        self.dialog.open()

    async def _check(self) -> None:
        g, document = self.gateway, self.text.value or ""
        if g is None:
            return
        self._reset()
        try:
            seen = await _db(gateway_push.preview, g.id, document)
        except (Invalid, NotFound) as exc:
            self.problem.set_text(f"Not sent — fix this and check again:\n{exc}")
            self.problem.set_visibility(True)
            return
        self.checked = document
        self.diff.set_content(seen.diff or "(the same text as the last push)")
        self.diff.set_visibility(True)
        path = json.dumps(PUSH.format(gateway_id=g.id))
        what = json.dumps(f"Config {seen.version} sent to {g.slug}; its outcome appears when the gateway reports it")
        # The button carries the exact text that was checked (the server validates it again anyway).
        with self.send_box:
            ui.button(f"Send config {seen.version} to the gateway", icon="send", on_click=self.dialog.close).props(
                "unelevated no-caps data-testid=config-send"
            ).on("click", js_handler=f"() => window.fwPushConfig({path}, {what}, {json.dumps(document)})")

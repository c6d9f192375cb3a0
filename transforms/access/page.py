"""The archivist's page: search, a record with its documents and history, the access log, quarantine decisions.

One static HTML page served at ``/archive``; it holds no data itself. Its script sends the
reader's token to the same API every other client uses, so the page can show nothing the
token may not see, and every read it makes is in the access log. Values are inserted as text
(``textContent``), never as HTML. Searches are POSTed with the words and personnummer in the body,
so they never appear in a URL, a request log or the browser's history.

Sign-in: with an identity provider configured (``GET /api/v1/sign-in`` says which), the page
signs the reader in with the authorization code flow and PKCE (S256) as a public client: it
sends the browser to the provider, takes the code back at ``/archive``, checks ``state``,
exchanges the code for an access token at the provider's token endpoint, removes the code from
the address bar and keeps the token in ``sessionStorage`` (this tab only). Without a provider
the reader pastes an API token, as before.
"""

from transforms import SOFTWARE_NAME

PAGE = r"""<!doctype html>
<html lang="sv"><head><meta charset="utf-8"><title>__SOFTWARE__ – arkivet</title>
<style>
 body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}
 table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}
 .classified{color:#a00} #status{color:#555;margin:.5rem 0} section{margin-top:1.2rem}
 input{padding:.25rem} button{padding:.25rem .6rem}
</style></head>
<body>
<h1>__SOFTWARE__ – arkivet</h1>
<form id="login"><span id="tokenbox"><label>Token <input id="token" type="password" size="50"></label></span>
 <label>Syfte <input id="purpose" size="30" placeholder="t.ex. Begäran KS 2026/0001"></label>
 <button id="save">Spara</button> <button type="button" id="signin" hidden>Logga in</button>
 <button type="button" id="signout" hidden>Logga ut</button> <span id="who"></span></form>
<form id="search"><input id="q" size="40" placeholder="Diarienummer, titel, part …">
 <input id="system" size="10" placeholder="system"> <input id="pnr" size="14" placeholder="personnummer">
 <button id="go">Sök</button> <button type="button" id="showlog">Åtkomstlogg</button>
 <button type="button" id="showcases">Karantän</button></form>
<div id="status"></div>
<section id="results"></section>
<section id="record"></section>
<section id="cases"></section>
<section id="log"></section>
<script>
const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = text;
  if (cls) e.className = cls; return e; };
function headers() {
  const h = {"Authorization": "Bearer " + (sessionStorage.getItem("arkiv-token") || "")};
  const p = sessionStorage.getItem("arkiv-purpose"); if (p) h["X-Purpose"] = encodeURIComponent(p);
  return h;
}
async function api(path, body) {
  // relative to the page, so that the app works mounted under a prefix (e.g. in Airflow's API server);
  // a body (search text, personnummer) is POSTed as JSON, never put in the URL
  const init = {headers: headers()};
  if (body !== undefined) { init.method = "POST"; init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body); }
  const r = await fetch(path.replace(/^\//, ""), init);
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(r.status + ": " + (body.detail || r.statusText));
  }
  return r;
}
function status(text) { $("status").textContent = text; }
function table(head, rows) {
  const t = el("table"); const tr = el("tr"); head.forEach(h => tr.appendChild(el("th", h))); t.appendChild(tr);
  rows.forEach(r => t.appendChild(r)); return t;
}
async function showWho() {
  try { const me = await (await api("/api/v1/whoami")).json();
        $("who").textContent = (me.display_name || me.name) + " (" + (me.roles && me.roles.length ? me.roles.join(", ")
          : me.role) + (me.system ? ", " + me.system : "") + ")"; }
  catch (e) { $("who").textContent = e.message; }
}
$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!$("tokenbox").hidden) sessionStorage.setItem("arkiv-token", $("token").value);
  sessionStorage.setItem("arkiv-purpose", $("purpose").value);
  await showWho();
});
// --- sign-in through the identity provider: authorization code + PKCE, a public client ---
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const randomString = () => b64url(crypto.getRandomValues(new Uint8Array(32)));
const here = () => location.origin + location.pathname;
async function signIn(provider) {
  const verifier = randomString(), state = randomString();
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("arkiv-pkce", JSON.stringify({verifier, state}));
  const q = new URLSearchParams({response_type: "code", client_id: provider.client_id, redirect_uri: here(),
    scope: provider.scope, state, code_challenge: challenge, code_challenge_method: "S256"});
  if (provider.resource) q.set("resource", provider.resource);
  location.assign(provider.authorization_endpoint + "?" + q.toString());
}
async function finishSignIn(provider) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  history.replaceState(null, "", here());  // the code never stays in the address bar or the history
  const saved = JSON.parse(sessionStorage.getItem("arkiv-pkce") || "{}");
  sessionStorage.removeItem("arkiv-pkce");
  if (params.get("error")) { status("Inloggningen avbröts: " + params.get("error")); return; }
  if (!saved.state || params.get("state") !== saved.state) { status("Inloggningen avvisades (fel state)"); return; }
  const body = new URLSearchParams({grant_type: "authorization_code", code: params.get("code"),
    redirect_uri: here(), client_id: provider.client_id, code_verifier: saved.verifier});
  if (provider.resource) body.set("resource", provider.resource);
  const r = await fetch(provider.token_endpoint, {method: "POST", body,
    headers: {"Content-Type": "application/x-www-form-urlencoded"}});
  const answer = await r.json().catch(() => ({}));
  if (!r.ok || !answer.access_token) { status("Inloggningen misslyckades: " + (answer.error || r.status)); return; }
  sessionStorage.setItem("arkiv-token", answer.access_token);
}
(async () => {
  let info = {provider: null};
  try { info = await (await fetch("api/v1/sign-in")).json(); } catch (e) { /* the embedded default */ }
  const provider = info.provider;
  if (!provider) return;
  $("tokenbox").hidden = true; $("signin").hidden = false; $("signout").hidden = false;
  $("signin").addEventListener("click", () => signIn(provider));
  $("signout").addEventListener("click", () => { sessionStorage.removeItem("arkiv-token");
    $("who").textContent = "utloggad"; });
  await finishSignIn(provider);
  if (sessionStorage.getItem("arkiv-token")) await showWho();
})();
$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault(); const body = {q: $("q").value};
  if ($("system").value) body.system = $("system").value;
  if ($("pnr").value) body.personnummer = $("pnr").value;
  try {
    const r = await (await api("/api/v1/search", body)).json();
    status(r.total + " träff(ar)");
    const rows = r.hits.map(h => { const tr = el("tr"); const a = el("a", h.reference); a.href = "#";
      a.className = "hit"; a.dataset.link = h.link;
      a.addEventListener("click", (e) => { e.preventDefault(); openRecord(h.link); });
      const td = el("td"); td.appendChild(a); tr.appendChild(td);
      const masked = h.classified ? "[sekretess: " + (h.secrecy_reference || "OSL") + "]" : "";
      tr.appendChild(el("td", h.title == null ? masked : h.title, h.classified ? "classified" : null));
      [h.closed, h.system, h.storage].forEach(v => tr.appendChild(el("td", v || ""))); return tr; });
    $("results").replaceChildren(table(["Diarienummer", "Titel", "Avslutat", "System", "Förvaring"], rows));
  } catch (e) { status(e.message); }
});
async function openRecord(link) {
  try {
    const rec = await (await api(link)).json(); const box = $("record"); box.replaceChildren();
    box.appendChild(el("h2", rec.reference + " – " + (rec.title == null ? "[sekretess]" : rec.title)));
    box.appendChild(el("p", "Förvaring: " + rec.storage + " · Paket: " + rec.package_id
                            + " · Klass: " + rec.record_class));
    if (rec.withheld) { box.appendChild(el("p", rec.withheld, "classified")); return; }
    if (rec.parties && rec.parties.length) box.appendChild(el("p", "Parter: " + rec.parties.join(", ")));
    const rows = (rec.documents || []).map(d => { const tr = el("tr");
      tr.appendChild(el("td", d.number == null ? "" : String(d.number)));
      tr.appendChild(el("td", d.title == null ? "[sekretess]" : d.title, d.classified ? "classified" : null));
      tr.appendChild(el("td", String(d.size)));
      const td = el("td");
      const copies = (d.copies || []).filter(c => c.content);
      if (!copies.length && d.content) copies.push({copy: "original", content: d.content, name: d.name});
      copies.forEach(c => { const label = c.copy === "preservation" ? "Bevarandeexemplar (PDF/A)" : "Original";
        const b = el("button", "Öppna " + label.toLowerCase()); b.className = "open " + c.copy;
        b.title = [c.format_name, c.puid, c.size == null ? null : c.size + " byte"].filter(Boolean).join(" · ");
        b.addEventListener("click", () => openDocument(d, c)); td.appendChild(b); });
      tr.appendChild(td); return tr; });
    box.appendChild(table(["Nr", "Handling", "Byte", "Exemplar"], rows));
    const hist = await (await api("/api/v1/packages/" + rec.package_id + "/history")).json().catch(() => null);
    if (hist) { box.appendChild(el("h3", "Historik"));
      box.appendChild(table(["Tid", "Händelse", "Utfall", "Detalj"], hist.events.map(e => { const tr = el("tr");
        [e.time, e.type, e.outcome, e.detail].forEach(v => tr.appendChild(el("td", v))); return tr; }))); }
  } catch (e) { status(e.message); }
}
async function openDocument(d, c) {
  try {
    const blob = await (await api(c.content)).blob(); const url = URL.createObjectURL(blob);
    const name = c.name || d.name || d.document_id;
    const a = el("a", "Ladda ned " + name); a.href = url; a.download = name; a.id = "download";
    const which = c.copy === "preservation" ? " (bevarandeexemplar)" : " (original)";
    const said = "Öppnade handling " + d.document_id + which + ": " + blob.size + " byte ";
    $("status").replaceChildren(el("span", said), a);
  } catch (e) { status(e.message); }
}
// quarantine cases: an archivist approves with a deviation or rejects, in their own (signed-in) name
async function showCases() {
  try {
    const r = await (await api("/api/v1/quarantine")).json();
    const rows = r.cases.map(c => { const tr = el("tr"); tr.className = "case"; tr.dataset.case = c.id;
      [c.id, c.system, c.kind, c.reasons.join("; ")].forEach(v => tr.appendChild(el("td", v)));
      const td = el("td"); const why = el("input"); why.className = "why"; why.placeholder = "Motivering";
      td.appendChild(why);
      [["approve", "Godkänn med avvikelse"], ["reject", "Avvisa"]].forEach(([d, label]) => {
        const b = el("button", label); b.className = d; b.type = "button";
        b.addEventListener("click", () => decide(c.id, d, why.value)); td.appendChild(b); });
      tr.appendChild(td); return tr; });
    $("cases").replaceChildren(el("h2", "Karantän"), table(["Ärende", "System", "Slag", "Skäl", "Beslut"], rows));
  } catch (e) { status(e.message); }
}
async function decide(caseId, decision, justification) {
  try {
    const r = await (await api("/api/v1/quarantine/decisions", {case_id: caseId, decision, justification})).json();
    status("Ärende " + r.id + ": " + (r.status === "approved" ? "godkänt med avvikelse" : "avvisat") + " av "
           + r.decided_by);
    await showCases();
  } catch (e) { status(e.message); }
}
$("showcases").addEventListener("click", showCases);
$("showlog").addEventListener("click", async () => {
  try {
    const r = await (await api("/api/v1/access-log?limit=100")).json();
    $("log").replaceChildren(el("h2", "Åtkomstlogg"), table(["Tid", "Vem", "Namn", "Roller", "Åtgärd", "Utfall", "Vad",
      "Syfte"], r.entries.map(e => { const tr = el("tr");
        [e.time, e.actor, e.name || "", (e.roles && e.roles.length ? e.roles.join(", ") : e.role), e.action, e.outcome,
         e.target, e.purpose].forEach(v => tr.appendChild(el("td", v))); tr.className = "logrow"; return tr; })));
  } catch (e) { status(e.message); }
});
</script></body></html>
""".replace("__SOFTWARE__", SOFTWARE_NAME)

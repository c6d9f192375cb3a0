"""The archivist's page (first version): search, a record with its documents and history, the access log.

One static HTML page served at ``/archive``; it holds no data itself. Its script sends the
reader's token to the same API every other client uses, so the page can show nothing the
token may not see, and every read it makes is in the access log. Values are inserted as text
(``textContent``), never as HTML. Searches are POSTed with the words and personnummer in the body,
so they never appear in a URL, a request log or the browser's history.
"""

PAGE = r"""<!doctype html>
<html lang="sv"><head><meta charset="utf-8"><title>Arkivflöde – arkivet</title>
<style>
 body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:70rem}
 table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}
 .classified{color:#a00} #status{color:#555;margin:.5rem 0} section{margin-top:1.2rem}
 input{padding:.25rem} button{padding:.25rem .6rem}
</style></head>
<body>
<h1>Arkivflöde – arkivet</h1>
<form id="login"><label>Token <input id="token" type="password" size="50"></label>
 <label>Syfte <input id="purpose" size="30" placeholder="t.ex. Begäran KS 2026/0001"></label>
 <button>Spara</button> <span id="who"></span></form>
<form id="search"><input id="q" size="40" placeholder="Diarienummer, titel, part …">
 <input id="system" size="10" placeholder="system"> <input id="pnr" size="14" placeholder="personnummer">
 <button id="go">Sök</button> <button type="button" id="showlog">Åtkomstlogg</button></form>
<div id="status"></div>
<section id="results"></section>
<section id="record"></section>
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
$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault(); sessionStorage.setItem("arkiv-token", $("token").value);
  sessionStorage.setItem("arkiv-purpose", $("purpose").value);
  try { const me = await (await api("/api/v1/whoami")).json();
        $("who").textContent = me.name + " (" + me.role + (me.system ? ", " + me.system : "") + ")"; }
  catch (e) { $("who").textContent = e.message; }
});
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
$("showlog").addEventListener("click", async () => {
  try {
    const r = await (await api("/api/v1/access-log?limit=100")).json();
    $("log").replaceChildren(el("h2", "Åtkomstlogg"), table(["Tid", "Vem", "Roll", "Åtgärd", "Utfall", "Vad", "Syfte"],
      r.entries.map(e => { const tr = el("tr"); [e.time, e.actor, e.role, e.action, e.outcome, e.target, e.purpose]
        .forEach(v => tr.appendChild(el("td", v))); tr.className = "logrow"; return tr; })));
  } catch (e) { status(e.message); }
});
</script></body></html>
"""

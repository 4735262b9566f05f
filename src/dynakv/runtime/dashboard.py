"""The one-page dashboard served at `/`: members, ring ownership and this node's status.

Static HTML with a little JavaScript that polls /v1/cluster and /v1/status.
"""

DASHBOARD_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>dynakv</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd}
.up{color:#080}.down{color:#c00}pre{background:#f6f6f6;padding:1rem}
</style></head><body>
<h1>dynakv</h1>
<h2>Members</h2><table id="members"><tr><th>data center</th><th>rack</th><th>name</th>
<th>status</th><th>node</th><th>http</th><th>partitions</th></tr></table>
<h2>This node</h2><pre id="status"></pre>
<script>
async function refresh(){
  const c = await (await fetch('/v1/cluster')).json();
  const s = await (await fetch('/v1/status')).json();
  const t = document.getElementById('members');
  while (t.rows.length > 1) t.deleteRow(1);
  const place = m => m.datacenter + '\0' + m.name;
  const members = [...c.members].sort((a, b) => (place(a) < place(b) ? -1 : 1));
  for (const m of members){
    const r = t.insertRow();
    const row = [m.datacenter, m.rack, m.name, m.status, m.node_addr, m.http_addr];
    for (const v of [...row, m.partitions]){
      const cell = r.insertCell(); cell.textContent = v;
      if (v === m.status) cell.className = m.status;
    }
  }
  document.getElementById('status').textContent = JSON.stringify(s, null, 2);
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""

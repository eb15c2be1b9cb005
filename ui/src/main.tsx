// reckon's web UI: a single-page app under /ui/ whose URL names every view (App, filters,
// revision, object), so any view can be linked to and reloaded.
import { render, type ComponentChildren } from "preact";
import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import {
  api, qs, session, saveSession, signOut, follow, ApiError,
  type AppStatus, type EventRow, type Page, type Revision, type Blame, type Drift, type Diff, type Role,
} from "./api";
import { joinDrifts, type DriftItem } from "./drift";

const BASE = "/ui";

// ---- routing: the URL is the state ----------------------------------------------------------

function navigate(href: string, replace = false) {
  if (replace) history.replaceState(null, "", href); else history.pushState(null, "", href);
  window.dispatchEvent(new Event("reckon:navigate"));
  if (!replace) window.scrollTo(0, 0);
}

function useLocation(): URL {
  const [url, setUrl] = useState(() => new URL(location.href));
  useEffect(() => {
    const update = () => setUrl(new URL(location.href));
    window.addEventListener("popstate", update);
    window.addEventListener("reckon:navigate", update);
    return () => { window.removeEventListener("popstate", update); window.removeEventListener("reckon:navigate", update); };
  }, []);
  return url;
}

function Link(props: { href: string; children: ComponentChildren; class?: string; "aria-current"?: "page" }) {
  return <a {...props} onClick={(e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.href);
  }} />;
}

const appHref = (app: string, sub = "", q = "") => `${BASE}/apps/${encodeURIComponent(app)}${sub}${q}`;
const revHref = (app: string, sha: string) => appHref(app, `/revisions/${sha}`);
const objHref = (app: string, object: string) => appHref(app, "/object", qs({ object }));

// ---- small pieces ---------------------------------------------------------------------------

/** A time in the browser's zone; the exact UTC time on hover. */
function Time({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span class="muted">—</span>;
  const d = new Date(iso);
  return <time dateTime={iso} title={`${d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "")} UTC`}>{d.toLocaleString()}</time>;
}

const short = (sha: string | null | undefined) => (sha ? sha.slice(0, 10) : "—");

function Rev({ app, sha }: { app: string; sha: string | null | undefined }) {
  if (!sha) return <span class="muted">—</span>;
  return <Link class="mono" href={revHref(app, sha)}>{short(sha)}</Link>;
}

function HealthBadge({ health }: { health: string | null }) {
  const cls = health === "Healthy" ? "ok" : health === "Degraded" || health === "Missing" ? "bad" : "warn";
  return <span class={`badge ${cls}`}>{health ?? "Unknown"}</span>;
}

function Intent({ s }: { s: AppStatus }) {
  if (!s.pinned) return <span>following Git{s.suspended ? " (suspended)" : ""}</span>;
  return (
    <span>
      <span class="badge warn">pinned</span> to <Rev app={s.app} sha={s.intent.revision} />
      {s.intent.actor && <> by {s.intent.actor}</>}
      {s.intent.reason && <span class="muted">: {s.intent.reason}</span>}
    </span>
  );
}

function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const msg = error instanceof Error ? error.message : String(error);
  return <div class="error" role="alert">{msg}</div>;
}

function useData<T>(load: () => Promise<T>, deps: unknown[]): [T | null, unknown, () => void] {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    load().then((d) => live && setData(d), (e) => {
      if (!live) return;
      if (e instanceof ApiError && e.status === 401) { signOut(); navigate(`${BASE}/signin${qs({ next: location.pathname + location.search })}`); }
      setError(e);
    });
    return () => { live = false; };
  }, [...deps, tick]);
  return [data, error, () => setTick((t) => t + 1)];
}

// ---- sign in ----------------------------------------------------------------------------

function SignIn({ next }: { next: string | null }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { document.title = "Sign in · reckon"; }, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const who = await api<{ actor: string; role: Role }>("/whoami", {}, token.trim());
      saveSession({ token: token.trim(), role: who.role, actor: who.actor });
      navigate(next && next.startsWith(`${BASE}/`) && !next.startsWith(`${BASE}/signin`) ? next : `${BASE}/`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <h1>Sign in to reckon</h1>
      <p class="muted">Paste a read or admin API token of this agent (its <code>--api-token-file</code> or <code>--admin-token-file</code>). It is kept in this browser tab only.</p>
      <form onSubmit={submit}>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        <button class="primary" type="submit" disabled={busy}>Sign in</button>
      </form>
      <ErrorBox error={error} />
    </main>
  );
}

// ---- fleet ------------------------------------------------------------------------------

function Fleet({ url }: { url: URL }) {
  const [apps, error] = useData(() => api<AppStatus[]>("/apps"), []);
  const q = url.searchParams.get("q") ?? "";
  const health = url.searchParams.get("health") ?? "";
  const intent = url.searchParams.get("intent") ?? "";
  const drift = url.searchParams.get("drift") === "1";
  useEffect(() => { document.title = "Fleet · reckon"; }, []);
  const set = (k: string, v: string) => {
    const u = new URL(url.href);
    if (v) u.searchParams.set(k, v); else u.searchParams.delete(k);
    navigate(u.pathname + u.search, true);
  };
  const shown = (apps ?? []).filter((a) =>
    (!q || a.app.toLowerCase().includes(q.toLowerCase())) &&
    (!health || (a.health ?? "Unknown") === health) &&
    (!intent || (intent === "pinned" ? a.pinned : !a.pinned)) &&
    (!drift || a.drift_count > 0));
  return (
    <main id="main">
      <h1>Fleet</h1>
      <div class="filters" role="search">
        <label>Search<input type="search" value={q} placeholder="App name" onInput={(e) => set("q", (e.target as HTMLInputElement).value)} /></label>
        <label>Health<select value={health} onChange={(e) => set("health", (e.target as HTMLSelectElement).value)}>
          <option value="">any</option>{["Healthy", "Progressing", "Degraded", "Missing", "Unknown"].map((h) => <option>{h}</option>)}
        </select></label>
        <label>Intent<select value={intent} onChange={(e) => set("intent", (e.target as HTMLSelectElement).value)}>
          <option value="">any</option><option value="following">following</option><option value="pinned">pinned</option>
        </select></label>
        <label style="flex-direction:row;align-items:center;gap:.35rem"><input type="checkbox" checked={drift} onChange={(e) => set("drift", (e.target as HTMLInputElement).checked ? "1" : "")} />drifting only</label>
      </div>
      <ErrorBox error={error} />
      {apps && <p class="muted" aria-live="polite">{shown.length} of {apps.length} Apps</p>}
      <div class="scroll" tabIndex={0}>
        <table class="fleet">
          <thead><tr><th>App</th><th>Intent</th><th>Applied</th><th>Observed</th><th>Health</th><th>Drift</th><th>Last sync</th></tr></thead>
          <tbody>
            {shown.map((a) => (
              <tr>
                <td data-label="App"><Link href={appHref(a.app)}>{a.app}</Link></td>
                <td data-label="Intent"><Intent s={a} /></td>
                <td data-label="Applied"><Rev app={a.app} sha={a.applied_revision} /></td>
                <td data-label="Observed"><Rev app={a.app} sha={a.observed_revision} /></td>
                <td data-label="Health"><HealthBadge health={a.health} /></td>
                <td data-label="Drift">{a.drift_count > 0 ? <Link class="bad" href={appHref(a.app, "", qs({ kind: "drift" }))}>{a.drift_count} drifted</Link> : <span class="muted">0</span>}</td>
                <td data-label="Last sync">{a.last_sync ? <><Time iso={a.last_sync.time} /> <span class={a.last_sync.outcome === "Succeeded" ? "ok" : "bad"}>{a.last_sync.outcome}</span></> : <span class="muted">never</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </main>
  );
}

// ---- app header, rollback and resume ------------------------------------------------------

function AppHeader({ app, tab, onChanged, refresh = 0 }: { app: string; tab: string; onChanged?: () => void; refresh?: number }) {
  const [s, error, reload] = useData(() => api<AppStatus>(`/apps/${encodeURIComponent(app)}`), [app, refresh]);
  const [resuming, setResuming] = useState(false);
  const admin = session()?.role === "admin";
  return (
    <>
      <p><Link href={`${BASE}/`}>Fleet</Link> / </p>
      <h1>{app}</h1>
      <ErrorBox error={error} />
      {s && (
        <div class="card">
          <dl class="kv">
            <dt>Intent</dt><dd><Intent s={s} /></dd>
            <dt>Applied</dt><dd><Rev app={app} sha={s.applied_revision} /></dd>
            <dt>Observed</dt><dd><Rev app={app} sha={s.observed_revision} /></dd>
            <dt>Health</dt><dd><HealthBadge health={s.health} /> <span class="muted">since <Time iso={s.health_since} /></span></dd>
            <dt>Objects</dt><dd>{s.objects}</dd>
            <dt>Drift</dt><dd>{s.drift_count === 0 ? "none open" : s.drifted.map((o) => <div><Link href={objHref(app, o)}>{o}</Link></div>)}</dd>
            <dt>Last sync</dt><dd>{s.last_sync ? <><Time iso={s.last_sync.time} /> {s.last_sync.outcome}, <Rev app={app} sha={s.last_sync.revision} /></> : "never"}</dd>
          </dl>
          {admin && s.pinned && <div class="actions"><button class="primary" onClick={() => setResuming(true)}>Resume following Git</button></div>}
        </div>
      )}
      {resuming && s && <Confirm title={`Resume ${app}`} action="Resume"
        what={<p>{app} is pinned to <span class="mono">{short(s.intent.revision)}</span>. Resuming records a Resume intent by {session()?.actor} and the App follows Git again: it applies the newest observed revision, <span class="mono">{short(s.observed_revision)}</span>.</p>}
        run={(reason) => api(`/apps/${encodeURIComponent(app)}/resume`, { method: "POST", body: JSON.stringify({ reason }) })}
        done={() => { setResuming(false); reload(); onChanged?.(); }} cancel={() => setResuming(false)} />}
      <nav aria-label="App views" class="actions">
        <Link href={appHref(app)} aria-current={tab === "timeline" ? "page" : undefined}>Timeline</Link>
        <Link href={appHref(app, "/revisions")} aria-current={tab === "revisions" ? "page" : undefined}>Revisions</Link>
        <Link href={appHref(app, "/drift")} aria-current={tab === "drift" ? "page" : undefined}>Drift</Link>
      </nav>
    </>
  );
}

/** A modal that says what will happen, asks for a reason, and runs the action. */
function Confirm({ title, what, action, run, done, cancel }: {
  title: string; what: ComponentChildren; action: string;
  run: (reason: string) => Promise<unknown>; done: () => void; cancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { ref.current?.showModal(); }, []);
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onCancel={cancel}>
      <form method="dialog" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try { await run(reason.trim()); ref.current?.close(); done(); } catch (err) { setError(err); } finally { setBusy(false); }
      }}>
        <h2 id="confirm-title">{title}</h2>
        {what}
        <label for="reason">Reason (recorded in the log)</label>
        <textarea id="reason" required rows={2} style="width:100%" value={reason} onInput={(e) => setReason((e.target as HTMLTextAreaElement).value)} />
        <ErrorBox error={error} />
        <div class="actions">
          <button type="submit" class="danger" disabled={busy || !reason.trim()}>{action}</button>
          <button type="button" onClick={() => { ref.current?.close(); cancel(); }}>Cancel</button>
        </div>
      </form>
    </dialog>
  );
}

// ---- timeline -------------------------------------------------------------------------------

const FILTERS = ["kind", "object", "author", "user", "revision", "since", "until"] as const;

function EventItem({ app, row, fresh }: { app: string; row: EventRow; fresh: boolean }) {
  const [open, setOpen] = useState(false);
  return (
    <li class={fresh ? "new" : ""} data-seq={row.seq}>
      <button class="row" aria-expanded={open} onClick={() => setOpen(!open)}>
        <span><Time iso={row.time} /></span>
        <span><span class={`badge ${row.category === "drift" || row.category === "error" ? "bad" : row.category === "rollback" ? "warn" : ""}`}>{row.kind}</span></span>
        <span>{row.summary}</span>
      </button>
      {open && (
        <div>
          <div class="actions">
            {row.object && <Link href={objHref(app, row.object)}>Blame {row.object}</Link>}
            {row.revision && <Link href={revHref(app, row.revision)}>Revision {short(row.revision)}</Link>}
            <span class="muted">#{row.seq}{row.actor ? ` · ${row.actor}` : ""}</span>
          </div>
          <pre class="full" tabIndex={0}>{JSON.stringify(row.event, null, 2)}</pre>
        </div>
      )}
    </li>
  );
}

/** An event's identity: its sequence number, and in a fleet its shard (each has its own log). */
const rowKey = (r: EventRow) => `${r.shard ?? ""}:${r.seq}`;

/** Newest first, older pages by cursor as the list scrolls, new events live from the stream. */
function Timeline({ app, filters, onLive }: { app: string; filters: Record<string, string | undefined>; onLive?: () => void }) {
  const key = JSON.stringify(filters);
  const [rows, setRows] = useState<EventRow[]>([]);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const [next, setNext] = useState<number | string | null>(null);
  const [loading, setLoading] = useState(false);
  const [done, setDone] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [live, setLive] = useState(false);
  const sentinel = useRef<HTMLDivElement>(null);
  const busy = useRef(false);

  const load = useCallback(async (cursor: number | string | null, first: boolean) => {
    if (busy.current) return;
    busy.current = true;
    setLoading(true);
    try {
      // A rarely matching filter may give short pages with a next: read on to a screenful.
      let got: EventRow[] = [];
      let c = cursor;
      for (let i = 0; i < 5; i++) {
        const page = await api<Page>(`/events${qs({ app, ...filters, limit: "50", cursor: c === null ? undefined : String(c) })}`);
        got = got.concat(page.events);
        c = page.next;
        if (c === null || got.length >= 20) break;
      }
      setRows((old) => (first ? got : old.concat(got)));
      setNext(c);
      setDone(c === null);
      return got;
    } catch (e) {
      setError(e);
      return null;
    } finally {
      busy.current = false;
      setLoading(false);
    }
  }, [app, key]);

  useEffect(() => {
    setRows([]); setNext(null); setDone(false); setError(null); setFresh(new Set());
    let stop: (() => void) | null = null;
    let cancelled = false;
    // A burst of events (a sync) refreshes the App's status once, not once per event.
    let settle: number | undefined;
    load(null, true).then((got) => {
      if (cancelled || !got) return;
      const newest = got.length ? got[0] : null;
      stop = follow(app, filters, newest, (row) => {
        setRows((old) => (old.some((r) => rowKey(r) === rowKey(row)) ? old : [row, ...old]));
        setFresh((f) => new Set(f).add(rowKey(row)));
        clearTimeout(settle);
        settle = setTimeout(() => onLive?.(), 500) as unknown as number;
      }, setLive);
    });
    return () => { cancelled = true; clearTimeout(settle); stop?.(); };
  }, [app, key]);

  useEffect(() => {
    const el = sentinel.current;
    if (!el) return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && !done && next !== null) load(next, false);
    });
    io.observe(el);
    return () => io.disconnect();
  }, [next, done, load]);

  return (
    <section aria-label="Timeline">
      <p class="live muted" aria-live="polite">{live ? "● live: new events appear as they are recorded" : "○ connecting to live updates…"}</p>
      <ErrorBox error={error} />
      <ol class="timeline" reversed>
        {rows.map((r) => <EventItem key={rowKey(r)} app={app} row={r} fresh={fresh.has(rowKey(r))} />)}
      </ol>
      <div ref={sentinel} />
      {!done && next !== null && <button disabled={loading} onClick={() => load(next, false)}>Load older events</button>}
      {done && <p class="muted">{rows.length ? "The beginning of this history." : "No events match."}</p>}
      {loading && <p class="muted">Loading…</p>}
    </section>
  );
}

function AppPage({ app, url }: { app: string; url: URL }) {
  const filters: Record<string, string | undefined> = {};
  for (const f of FILTERS) filters[f] = url.searchParams.get(f) ?? undefined;
  useEffect(() => { document.title = `${app} · reckon`; }, [app]);
  const [key, setKey] = useState(0);
  const [live, setLive] = useState(0);
  return (
    <main id="main">
      <AppHeader app={app} tab="timeline" refresh={live} onChanged={() => setKey(key + 1)} />
      <form class="filters" role="search" aria-label="Filter the timeline" onSubmit={(e) => {
        e.preventDefault();
        const data = new FormData(e.target as HTMLFormElement);
        const q: Record<string, string> = {};
        for (const f of FILTERS) { const v = String(data.get(f) ?? "").trim(); if (v) q[f] = v; }
        navigate(appHref(app, "", qs(q)));
      }}>
        <label>Kind<select name="kind" value={filters.kind ?? ""}>
          <option value="">any</option>{["commit", "drift", "apply", "prune", "rollback", "error"].map((k) => <option>{k}</option>)}
        </select></label>
        <label>Object<input name="object" value={filters.object ?? ""} placeholder="Kind/namespace/name" /></label>
        <label>Author<input name="author" value={filters.author ?? ""} placeholder="email" /></label>
        <label>User<input name="user" value={filters.user ?? ""} placeholder="Kubernetes user" /></label>
        <label>Revision<input name="revision" value={filters.revision ?? ""} placeholder="SHA or prefix" size={12} /></label>
        <label>Since<input name="since" value={filters.since ?? ""} placeholder="24h or RFC 3339" size={12} /></label>
        <label>Until<input name="until" value={filters.until ?? ""} placeholder="1h or RFC 3339" size={12} /></label>
        <button type="submit">Apply filters</button>
        <Link href={appHref(app)}>Clear</Link>
      </form>
      <Timeline key={key} app={app} filters={filters} onLive={() => setLive((n) => n + 1)} />
    </main>
  );
}

// ---- revisions ----------------------------------------------------------------------------

function Revisions({ app }: { app: string }) {
  const [page, error] = useData(() => api<{ revisions: Revision[]; next: string | null }>(`/apps/${encodeURIComponent(app)}/revisions?limit=200`), [app]);
  useEffect(() => { document.title = `${app} revisions · reckon`; }, [app]);
  return (
    <main id="main">
      <AppHeader app={app} tab="revisions" />
      <ErrorBox error={error} />
      <div class="scroll" tabIndex={0}><table>
        <thead><tr><th>Revision</th><th>Summary</th><th>Author</th><th>Applied</th><th>Outcome</th></tr></thead>
        <tbody>{page?.revisions.map((r) => (
          <tr><td><Rev app={app} sha={r.sha} /></td><td>{r.summary}</td><td>{r.author_name}</td><td><Time iso={r.applied_at} /></td><td>{r.outcome ?? "—"}</td></tr>
        ))}</tbody>
      </table></div>
    </main>
  );
}

function RevisionPage({ app, sha, against }: { app: string; sha: string; against: string | null }) {
  const enc = encodeURIComponent(app);
  const [data, error, reload] = useData(async () => {
    const [commit, syncs, status] = await Promise.all([
      api<Page>(`/events${qs({ app, revision: sha, kind: "commit", limit: "1" })}`),
      api<Page>(`/events${qs({ app, revision: sha, kind: "apply", limit: "200" })}`),
      api<AppStatus>(`/apps/${enc}`),
    ]);
    return { commit: commit.events[0] ?? null, syncs: syncs.events, status };
  }, [app, sha]);
  const [rolling, setRolling] = useState<Diff | null | "none">(null);
  useEffect(() => { document.title = `${short(sha)} · ${app} · reckon`; }, [app, sha]);
  const c = data?.commit?.event?.CommitObserved;
  const full = c?.sha ?? data?.commit?.revision ?? sha;
  const sig = c?.signature;
  const sigText = !sig ? "—" : typeof sig === "string" ? sig : Object.keys(sig)[0] + (sig.Good ? ` (${sig.Good.format}, ${sig.Good.signer})` : "");
  const admin = session()?.role === "admin";
  const applied = data?.syncs.filter((e) => e.kind === "ObjectApplied") ?? [];
  const startRollback = async () => {
    const from = data?.status.applied_revision;
    try {
      setRolling(from ? await api<Diff>(`/apps/${enc}/diff${qs({ from, to: full })}`) : "none");
    } catch {
      setRolling("none");
    }
  };
  return (
    <main id="main">
      <AppHeader app={app} tab="revisions" onChanged={reload} />
      <h2>Revision <span class="mono">{short(full)}</span></h2>
      <ErrorBox error={error} />
      {data && (
        <div class="card">
          <dl class="kv">
            <dt>Commit</dt><dd class="mono">{full}</dd>
            <dt>Author</dt><dd>{c ? `${c.author?.name} <${c.author?.email}>` : "not observed (only applied)"}</dd>
            <dt>Authored</dt><dd><Time iso={c?.author?.time} /></dd>
            <dt>Signature</dt><dd>{sigText}</dd>
            <dt>Message</dt><dd><pre class="full" tabIndex={0} style="white-space:pre-wrap">{c?.message ?? "—"}</pre></dd>
            {c?.changed_paths && <><dt>Files changed</dt><dd>{c.changed_paths.join(", ") || "—"}</dd></>}
          </dl>
          {admin && data.status.applied_revision !== full && (
            <div class="actions"><button class="danger" onClick={startRollback}>Roll back to this revision</button></div>
          )}
        </div>
      )}
      {rolling !== null && (
        <Confirm title={`Roll back ${app} to ${short(full)}`} action="Roll back"
          what={<RollbackWhat app={app} diff={rolling === "none" ? null : rolling} to={full} />}
          run={(reason) => api(`/apps/${enc}/rollback`, { method: "POST", body: JSON.stringify({ to: full, reason }) })}
          done={() => { setRolling(null); navigate(appHref(app)); }} cancel={() => setRolling(null)} />
      )}
      <h2>Objects it changed</h2>
      {applied.length === 0 ? <p class="muted">None recorded.</p> : (
        <ul>{applied.map((e) => <li><Link href={objHref(app, e.object!)}>{e.object}</Link> <span class="muted">{e.event.ObjectApplied?.action} {(e.event.ObjectApplied?.changed_fields ?? []).join(", ")}</span></li>)}</ul>
      )}
      {data && <CompareRevisions app={app} sha={full} against={against} applied={data.status.applied_revision} />}
      <h2>Its syncs</h2>
      <ul>{data?.syncs.filter((e) => e.kind.startsWith("Sync") || e.kind === "ApplyFailed").map((e) => <li><Time iso={e.time} /> {e.kind}: {e.summary}</li>)}</ul>
      <p><Link href={appHref(app, "", qs({ revision: full }))}>Every event about this revision</Link></p>
    </main>
  );
}

// ---- revision diff: the recorded manifests of two revisions, side by side --------------------

/** Every leaf of a manifest by its JSON pointer (RFC 6901), as the diff API names fields. */
function flatten(v: unknown, path = "", out = new Map<string, unknown>()): Map<string, unknown> {
  if (v !== null && typeof v === "object" && Object.keys(v as object).length > 0) {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) flatten(x, `${path}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`, out);
  } else out.set(path, v);
  return out;
}

/** The name the API gives an object (`Kind[.group]/namespace/name`, or `Kind[.group]/name`). */
function objectName(m: any): string {
  const av: string = m?.apiVersion ?? "";
  const group = av.includes("/") ? av.split("/")[0] : "";
  const kind = group ? `${m?.kind}.${group}` : String(m?.kind);
  const ns = m?.metadata?.namespace;
  return ns ? `${kind}/${ns}/${m?.metadata?.name}` : `${kind}/${m?.metadata?.name}`;
}

const show = (v: unknown) => (v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));

interface Shown { revision: string; manifests: any[] }

/**
 * The manifests recorded for this revision against another recorded one (the URL's `against`,
 * else the applied revision, else the one before it): per object, every field in two columns,
 * the fields the diff API reports as changed highlighted and listed first.
 */
function CompareRevisions({ app, sha, against, applied }: { app: string; sha: string; against: string | null; applied: string | null }) {
  const enc = encodeURIComponent(app);
  const [revs] = useData(() => api<{ revisions: Revision[] }>(`/apps/${enc}/revisions?limit=200`), [app]);
  const recorded = (revs?.revisions ?? []).filter((r) => r.digest);
  const self = recorded.findIndex((r) => r.sha === sha);
  const other = against
    ?? (applied && applied !== sha && recorded.some((r) => r.sha === applied) ? applied : null)
    ?? (self >= 0 ? recorded[self + 1]?.sha ?? recorded[self - 1]?.sha : recorded.find((r) => r.sha !== sha)?.sha)
    ?? null;
  const [cmp, error] = useData(async () => {
    if (!other || self < 0) return null;
    const [diff, left, right] = await Promise.all([
      api<Diff>(`/apps/${enc}/diff${qs({ from: other, to: sha })}`),
      api<Shown>(`/apps/${enc}/revisions/${encodeURIComponent(other)}/manifests`),
      api<Shown>(`/apps/${enc}/revisions/${encodeURIComponent(sha)}/manifests`),
    ]);
    return { diff, left, right };
  }, [app, sha, other, self < 0]);
  if (!revs) return null;
  if (self < 0) return <><h2>Compare</h2><p class="muted">No manifests are recorded for this revision (it was observed, never applied).</p></>;
  if (recorded.length < 2) return <><h2>Compare</h2><p class="muted">This is the only revision with recorded manifests: nothing to compare it with.</p></>;
  const pick = (v: string) => navigate(revHref(app, sha) + qs({ against: v }), true);
  const leftBy = new Map((cmp?.left.manifests ?? []).map((m) => [objectName(m), m]));
  const rightBy = new Map((cmp?.right.manifests ?? []).map((m) => [objectName(m), m]));
  const changed = new Map((cmp?.diff.changed ?? []).map((c) => [c.object, new Set(c.fields.map((f) => f.path))]));
  const names = [...new Set([...leftBy.keys(), ...rightBy.keys()])].sort((a, b) =>
    Number(!changed.has(b) && leftBy.has(b) && rightBy.has(b)) - Number(!changed.has(a) && leftBy.has(a) && rightBy.has(a)) || a.localeCompare(b));
  const same = names.filter((n) => leftBy.has(n) && rightBy.has(n) && !changed.has(n)).length;
  const o = cmp?.left.revision ?? other!;
  return (
    <section aria-labelledby="compare-title" class="compare">
      <h2 id="compare-title">Compare with another revision</h2>
      <div class="filters">
        <label>Against<select id="against" value={other ?? ""} onChange={(e) => pick((e.target as HTMLSelectElement).value)}>
          {recorded.filter((r) => r.sha !== sha).map((r) => <option value={r.sha}>{short(r.sha)} {r.summary ?? ""}{r.sha === applied ? " (applied)" : ""}</option>)}
        </select></label>
      </div>
      <ErrorBox error={error} />
      {cmp && (
        <>
          <p class="muted" aria-live="polite">
            {cmp.diff.changed.length} changed, {cmp.diff.added.length} only in <span class="mono">{short(sha)}</span>, {cmp.diff.removed.length} only in <span class="mono">{short(o)}</span>, {same} the same.
          </p>
          {names.map((name) => {
            const l = leftBy.get(name), r = rightBy.get(name);
            const paths = changed.get(name);
            if (l && r && !paths) return null;
            const lf = l ? flatten(l) : new Map<string, unknown>(), rf = r ? flatten(r) : new Map<string, unknown>();
            const rows = [...new Set([...lf.keys(), ...rf.keys()])];
            const hot = (p: string) => !l || !r || (paths?.has(p) ?? false) || show(lf.get(p)) !== show(rf.get(p));
            rows.sort((a, b) => Number(hot(b)) - Number(hot(a)));
            return (
              <div class="card diff" data-object={name}>
                <h3 class="mono">{name} <span class="badge">{!l ? `only in ${short(sha)}` : !r ? `only in ${short(o)}` : `${paths!.size} field${paths!.size === 1 ? "" : "s"} changed`}</span></h3>
                <div class="scroll" tabIndex={0} role="region" aria-label={`${name}: ${short(o)} and ${short(sha)} side by side`}>
                  <table class="sbs">
                    <thead><tr><th scope="col">Field</th><th scope="col"><span class="mono">{short(o)}</span></th><th scope="col"><span class="mono">{short(sha)}</span> (this revision)</th></tr></thead>
                    <tbody>{rows.map((p) => {
                      const h = hot(p);
                      return (
                        <tr class={h ? "chg" : ""} data-field={p}>
                          <th scope="row" class="mono">{p}{h && <span class="sr-only"> (changed)</span>}</th>
                          <td class="mono">{lf.has(p) ? show(lf.get(p)) : <span class="muted">absent</span>}</td>
                          <td class="mono">{rf.has(p) ? show(rf.get(p)) : <span class="muted">absent</span>}</td>
                        </tr>
                      );
                    })}</tbody>
                  </table>
                </div>
              </div>
            );
          })}
        </>
      )}
    </section>
  );
}

function RollbackWhat({ app, diff, to }: { app: string; diff: Diff | null; to: string }) {
  return (
    <div>
      <p>This records a Rollback intent by <strong>{session()?.actor}</strong>, pins <strong>{app}</strong> to <span class="mono">{short(to)}</span> and applies the manifests recorded for it. Auto-sync stays on that revision until someone resumes.</p>
      {diff ? (
        <div class="scroll" tabIndex={0}>
          <p>Against the applied revision <span class="mono">{short(diff.from)}</span>:</p>
          <ul>
            {diff.added.map((o) => <li>created: {o}</li>)}
            {diff.removed.map((o) => <li>pruned: {o}</li>)}
            {diff.changed.map((c) => <li>{c.object}: {c.fields.map((f) => <div class="mono">{f.path}: {JSON.stringify(f.from)} → {JSON.stringify(f.to)}</div>)}</li>)}
            {diff.added.length + diff.removed.length + diff.changed.length === 0 && <li>no object changes</li>}
          </ul>
        </div>
      ) : <p class="muted">The difference to the applied revision is not available.</p>}
    </div>
  );
}

// ---- object: blame ----------------------------------------------------------------------------

function DriftLine({ d }: { d: Drift }) {
  const who = d.changed_by === null ? <span class="muted">no audit attribution recorded</span>
    : d.changed_by.length === 0 ? <span class="muted">unattributed (no audit event matched)</span>
    : <span>by <strong class="person">{d.changed_by.map((w) => w.username).join(", ")}</strong></span>;
  return (
    <li>
      <Time iso={d.time} /> drifted {d.path && <code>{d.path}</code>}: <code>{d.expected ?? "—"}</code> → <code>{d.actual ?? "deleted"}</code>{" "}
      {who}
      {d.managers.length > 0 && <span class="muted"> · field manager {d.managers.map((m) => `${m.manager} (${m.operation})`).join(", ")}</span>}
      {" · "}{d.corrected ? <span class="ok">put back <Time iso={d.corrected_at} /></span> : d.superseded_by ? <span>superseded by <span class="mono">{short(d.superseded_by)}</span></span> : <span class="bad">open</span>}
    </li>
  );
}

function ObjectPage({ app, object }: { app: string; object: string }) {
  const [blame, error] = useData(() => api<Blame>(`/blame${qs({ object, app })}`), [app, object]);
  useEffect(() => { document.title = `${object} · ${app} · reckon`; }, [app, object]);
  return (
    <main id="main">
      <AppHeader app={app} tab="object" />
      <h2>Blame: <span class="mono">{object}</span></h2>
      <ErrorBox error={error} />
      {blame && (
        <>
          {blame.object_drifts.length > 0 && <div class="card"><strong>The whole object</strong><ul>{blame.object_drifts.map((d) => <DriftLine d={d} />)}</ul></div>}
          <div class="scroll" tabIndex={0}><table>
            <thead><tr><th>Field</th><th>Value</th><th>Set by</th><th>Drifts</th></tr></thead>
            <tbody>{blame.fields.map((f) => (
              <tr data-field={f.path}>
                <td class="mono">{f.path}</td>
                <td class="mono">{JSON.stringify(f.value)}</td>
                <td>{f.set_by ? <><Rev app={app} sha={f.set_by.revision} /> {f.set_by.author_name} <span class="muted">{f.set_by.summary}</span></> : <span class="muted">unknown</span>}</td>
                <td>{f.drifts.length ? <ul>{f.drifts.map((d) => <DriftLine d={d} />)}</ul> : <span class="muted">none</span>}</td>
              </tr>
            ))}</tbody>
          </table></div>
        </>
      )}
      <h2>Its timeline</h2>
      <Timeline app={app} filters={{ object }} />
    </main>
  );
}

// ---- drift: every drift in a time range, by person and by object ------------------------------

const DRIFT_PAGES = 10;

function DriftEntry({ app, d, showObject = true }: { app: string; d: DriftItem; showObject?: boolean }) {
  return (
    <li data-seq={d.seq}>
      <Time iso={d.time} /> {showObject && <Link href={objHref(app, d.object)}>{d.object}</Link>}{" "}
      {d.fields.map((f) => <span><code>{f.path || "(object)"}</code>: <code>{f.expected ?? "—"}</code> → <code>{f.actual ?? "deleted"}</code> </span>)}
      {d.managers.length > 0 && <span class="muted">· {d.managers.join(", ")} </span>}
      · {d.ended ? <span class="ok">{d.ended}</span> : <span class="bad">not put back in this range</span>}
    </li>
  );
}

function DriftPage({ app, url }: { app: string; url: URL }) {
  const since = url.searchParams.get("since") || "7d";
  const until = url.searchParams.get("until") ?? "";
  useEffect(() => { document.title = `Drift · ${app} · reckon`; }, [app]);
  const [data, error] = useData(async () => {
    let rows: EventRow[] = [];
    let cursor: number | string | null = null;
    let pages = 0;
    do {
      const page: Page = await api<Page>(`/events${qs({ app, kind: "drift", since, until, limit: "1000", cursor: cursor === null ? undefined : String(cursor) })}`);
      rows = rows.concat(page.events);
      cursor = page.next;
    } while (cursor !== null && ++pages < DRIFT_PAGES);
    return { drifts: joinDrifts(rows), truncated: cursor !== null };
  }, [app, since, until]);
  const drifts = data?.drifts ?? [];
  const people = new Map<string, DriftItem[]>();
  for (const d of drifts) for (const w of d.writers ?? []) people.set(w, [...(people.get(w) ?? []), d]);
  const unmatched = drifts.filter((d) => d.writers !== null && d.writers.length === 0);
  const unrecorded = drifts.filter((d) => d.writers === null);
  const objects = new Map<string, DriftItem[]>();
  for (const d of drifts) objects.set(d.object, [...(objects.get(d.object) ?? []), d]);
  const byCount = <T,>(m: Map<string, T[]>) => [...m.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
  return (
    <main id="main">
      <AppHeader app={app} tab="drift" />
      <h2>Drift</h2>
      <form class="filters" role="search" aria-label="Time range" onSubmit={(e) => {
        e.preventDefault();
        const f = new FormData(e.target as HTMLFormElement);
        navigate(appHref(app, "/drift", qs({ since: String(f.get("since") ?? "").trim(), until: String(f.get("until") ?? "").trim() })));
      }}>
        <label>Since<input name="since" value={since} placeholder="7d or RFC 3339" size={14} /></label>
        <label>Until<input name="until" value={until} placeholder="now, 1h or RFC 3339" size={14} /></label>
        <button type="submit">Show</button>
      </form>
      <ErrorBox error={error} />
      {data && (
        <>
          <p class="muted" aria-live="polite">
            {drifts.length} drift{drifts.length === 1 ? "" : "s"} on {objects.size} object{objects.size === 1 ? "" : "s"} since {since}{until ? ` until ${until}` : ""}: {drifts.length - unmatched.length - unrecorded.length} attributed to {people.size} {people.size === 1 ? "person" : "people"}, {unmatched.length + unrecorded.length} unattributed.
            {data.truncated && " The range holds more drift events than one view reads (10,000): narrow it."}
          </p>
          <h3 id="by-person">By person</h3>
          <div class="sides">
            <section aria-labelledby="attributed" class="card" data-side="attributed">
              <h4 id="attributed">Attributed</h4>
              {people.size === 0 ? <p class="muted">No drift in this range was matched to a person in the audit log.</p> : byCount(people).map(([who, ds]) => (
                <div data-person={who}><strong class="person">{who}</strong> <span class="muted">{ds.length}</span><ul>{ds.map((d) => <DriftEntry app={app} d={d} />)}</ul></div>
              ))}
            </section>
            <section aria-labelledby="unattributed" class="card" data-side="unattributed">
              <h4 id="unattributed">Unattributed</h4>
              {unmatched.length + unrecorded.length === 0 && <p class="muted">None.</p>}
              {unmatched.length > 0 && <div data-group="unmatched"><strong>No audit event matched</strong> <span class="muted">{unmatched.length}</span><ul>{unmatched.map((d) => <DriftEntry app={app} d={d} />)}</ul></div>}
              {unrecorded.length > 0 && <div data-group="unrecorded"><strong>No attribution recorded</strong> <span class="muted">{unrecorded.length} (audit attribution off, or still waiting for the audit log: docs/audit.md)</span><ul>{unrecorded.map((d) => <DriftEntry app={app} d={d} />)}</ul></div>}
            </section>
          </div>
          <h3 id="by-object">By object</h3>
          {objects.size === 0 ? <p class="muted">No drift in this range.</p> : (
            <div class="scroll" tabIndex={0} role="region" aria-labelledby="by-object"><table class="drift-objects">
              <thead><tr><th scope="col">Object</th><th scope="col">Drifts</th><th scope="col">People</th><th scope="col">Unattributed</th><th scope="col">Not put back</th></tr></thead>
              <tbody>{byCount(objects).map(([o, ds]) => (
                <tr data-object={o}>
                  <th scope="row"><Link href={objHref(app, o)}>{o}</Link></th>
                  <td>{ds.length}</td>
                  <td>{[...new Set(ds.flatMap((d) => d.writers ?? []))].join(", ") || <span class="muted">—</span>}</td>
                  <td>{ds.filter((d) => !d.writers?.length).length}</td>
                  <td>{ds.filter((d) => !d.ended).length}</td>
                </tr>
              ))}</tbody>
            </table></div>
          )}
        </>
      )}
    </main>
  );
}

// ---- integrity: the last store verification and the store's size ------------------------------

interface Integrity {
  store: { bytes: number; allocated_bytes: number; last_seq: number };
  last_verify: {
    verified_at: string; duration_ms: number; version: string; ok: boolean; events: number;
    tombstones: number; index_entries: number; blobs: number; last_seq: number; problems: string[];
  } | null;
  appended_since: number | null;
}

const bytes = (n: number) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${u[i]}`;
};
const count = (n: number) => n.toLocaleString();

/** What the agent knows of its store's integrity without verifying it per request: the result
 * `reckon store verify` recorded, and how much the log grew since (docs/storage.md). */
function IntegrityPage() {
  const [data, error] = useData(() => api<Integrity>("/integrity"), []);
  useEffect(() => { document.title = "Integrity · reckon"; }, []);
  const v = data?.last_verify;
  return (
    <main id="main">
      <h1>Integrity</h1>
      <ErrorBox error={error} />
      {data && (
        <>
          <h2>Store</h2>
          <div class="card" data-section="store"><dl class="kv">
            <dt>Size</dt><dd><span data-value="bytes">{bytes(data.store.bytes)}</span> <span class="muted">({bytes(data.store.allocated_bytes)} on disk)</span></dd>
            <dt>Events</dt><dd>the log ends at #{count(data.store.last_seq)}</dd>
          </dl></div>
          <h2>Last verification</h2>
          {!v ? (
            <div class="card" data-section="verify" data-state="never">
              <p><strong>Never verified</strong> (or by a reckon that did not record it).</p>
              <p class="muted">Verification walks every event, index entry and blob, so the agent does not run it on its live store: run <code>reckon store verify --store PATH</code> while the agent is stopped (at an upgrade, say). Its result then shows here.</p>
            </div>
          ) : (
            <div class="card" data-section="verify" data-state={v.ok ? "ok" : "problems"}>
              <p>{v.ok ? <span class="badge ok">OK</span> : <span class="badge bad">{v.problems.length} problem{v.problems.length === 1 ? "" : "s"}</span>}{" "}
                {v.ok ? "chain intact, no gaps, every index entry points to its event, every blob present" : "the store is damaged: reckon store verify names each problem (docs/storage.md)"}</p>
              {!v.ok && <ul>{v.problems.map((p) => <li class="mono">{p}</li>)}</ul>}
              <dl class="kv">
                <dt>Verified</dt><dd><Time iso={v.verified_at} /> <span class="muted">in {(v.duration_ms / 1000).toFixed(1)} s by reckon {v.version}</span></dd>
                <dt>Covered</dt><dd>up to #{count(v.last_seq)}: {count(v.events)} events, {count(v.tombstones)} tombstones, {count(v.index_entries)} index entries, {count(v.blobs)} blobs</dd>
                <dt>Since</dt><dd data-value="appended-since">{data.appended_since ? `${count(data.appended_since)} event${data.appended_since === 1 ? "" : "s"} appended, not covered` : "nothing appended"}</dd>
              </dl>
            </div>
          )}
        </>
      )}
    </main>
  );
}

// ---- shell ------------------------------------------------------------------------------

function Shell() {
  const url = useLocation();
  const path = url.pathname.replace(/\/+$/, "");
  const s = session();
  if (path === `${BASE}/signin` || !s) {
    if (path !== `${BASE}/signin`) { navigate(`${BASE}/signin${qs({ next: url.pathname + url.search })}`, true); return null; }
    return <><a class="sr-only" href="#main">Skip to content</a><SignIn next={url.searchParams.get("next")} /></>;
  }
  const m = path.slice(BASE.length).split("/").filter(Boolean).map(decodeURIComponent);
  let page;
  if (m.length === 0) page = <Fleet url={url} />;
  else if (m[0] === "integrity" && m.length === 1) page = <IntegrityPage />;
  else if (m[0] === "apps" && m.length === 2) page = <AppPage app={m[1]} url={url} />;
  else if (m[0] === "apps" && m[2] === "revisions" && m.length === 3) page = <Revisions app={m[1]} />;
  else if (m[0] === "apps" && m[2] === "revisions" && m.length === 4) page = <RevisionPage app={m[1]} sha={m[3]} against={url.searchParams.get("against")} />;
  else if (m[0] === "apps" && m[2] === "drift" && m.length === 3) page = <DriftPage app={m[1]} url={url} />;
  else if (m[0] === "apps" && m[2] === "object" && url.searchParams.get("object")) page = <ObjectPage app={m[1]} object={url.searchParams.get("object")!} />;
  else page = <main id="main"><h1>Not found</h1><p>No view at {url.pathname}. <Link href={`${BASE}/`}>Fleet</Link></p></main>;
  return (
    <>
      <a class="sr-only" href="#main">Skip to content</a>
      <header class="top">
        <Link class="brand" href={`${BASE}/`}>reckon</Link>
        <nav aria-label="Main"><Link href={`${BASE}/`}>Fleet</Link><Link href={`${BASE}/integrity`}>Integrity</Link></nav>
        <div class="who"><span>{s.actor} ({s.role})</span><button onClick={() => { signOut(); navigate(`${BASE}/signin`); }}>Sign out</button></div>
      </header>
      {page}
    </>
  );
}

render(<Shell />, document.getElementById("root")!);

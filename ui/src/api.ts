// The API client: every request carries the token the user signed in with, kept in this tab's
// sessionStorage only (gone when the tab closes; never in a URL, a cookie or localStorage).

export type Role = "read" | "admin";
export interface Session { token: string; role: Role; actor: string }

const KEY = "reckon.session";

export function session(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try { return JSON.parse(raw) as Session; } catch { return null; }
}
export function saveSession(s: Session) { sessionStorage.setItem(KEY, JSON.stringify(s)); }
export function signOut() { sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) { super(message); }
}

/** Calls `/api/v1{path}` with `token` (default: the session's). */
export async function api<T>(path: string, init: RequestInit = {}, token?: string): Promise<T> {
  const t = token ?? session()?.token;
  const headers = new Headers(init.headers);
  if (t) headers.set("Authorization", `Bearer ${t}`);
  if (init.body) headers.set("Content-Type", "application/json");
  const res = await fetch(`/api/v1${path}`, { ...init, headers });
  const text = await res.text();
  let body: any = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!res.ok) {
    const e = body?.error;
    throw new ApiError(res.status, e?.code ?? "http", e?.message ?? `${res.status} ${res.statusText}`);
  }
  return body as T;
}

export function qs(params: Record<string, string | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

export interface EventRow {
  seq: number; time: string; app: string | null; actor: string | null; kind: string;
  category: string | null; object: string | null; revision: string | null; summary: string;
  event: Record<string, any>; hash: string;
  /** In a sharded fleet: the shard whose log `seq` counts in. */
  shard?: number;
}
export interface Page { events: EventRow[]; next: number | string | null }
export interface AppStatus {
  app: string;
  intent: { kind: string; revision: string | null; actor: string | null; reason: string | null; seq: number | null };
  pinned: boolean; suspended: boolean; observed_revision: string | null; applied_revision: string | null;
  last_sync: { revision: string; time: string; outcome: string; duration_ms: number } | null;
  health: string | null; health_since: string | null; drift_count: number; drifted: string[]; objects: number;
}
export interface Revision {
  sha: string; author_name: string | null; author_email: string | null; authored_at: string | null;
  summary: string | null; first_seen: string; applied_at: string | null; outcome: string | null;
  digest: string | null; objects_changed: number;
}
export interface Writer { username: string; user_agent: string | null; time: string; verb: string; fields: string[] }
export interface Drift {
  seq: number; time: string; path: string; expected: string | null; actual: string | null;
  managers: { manager: string; operation: string; time: string | null }[];
  corrected: boolean; corrected_at: string | null; superseded_by: string | null;
  changed_by: Writer[] | null;
}
export interface BlameField {
  path: string; value: unknown;
  set_by: { revision: string; applied_at: string; author_name: string | null; author_email: string | null; summary: string | null } | null;
  drifts: Drift[];
}
export interface Blame { app: string; object: string; api_version: string; fields: BlameField[]; object_drifts: Drift[] }
export interface Diff {
  app: string; from: string; to: string; added: string[]; removed: string[];
  changed: { object: string; api_version: string; fields: { path: string; change: string; from: unknown; to: unknown }[] }[];
}

/**
 * Follows `GET /api/v1/apps/{app}/events/stream` (server-sent events) with fetch, so the token
 * travels in the Authorization header (EventSource cannot send one). Reconnects after the
 * server ends a stream or the network drops, from the last id seen, backing off to 30 s.
 */
export function follow(app: string, filters: Record<string, string | undefined>, after: EventRow | null,
  onEvent: (row: EventRow) => void, onState: (live: boolean) => void): () => void {
  const ctl = new AbortController();
  // In a fleet a position names its shard's log: the App's owner streams, and starts after its
  // newest event when the position is another shard's (the App moved).
  let last = after?.seq ?? null;
  let shard = after?.shard;
  let delay = 1000;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const url = `/api/v1/apps/${encodeURIComponent(app)}/events/stream${qs({ ...filters, after: last === null ? undefined : String(last), shard: shard === undefined ? undefined : String(shard) })}`;
        const res = await fetch(url, { headers: { Authorization: `Bearer ${session()?.token ?? ""}` }, signal: ctl.signal });
        if (!res.ok || !res.body) throw new Error(`stream: ${res.status}`);
        onState(true);
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let data = "";
            for (const line of block.split("\n")) if (line.startsWith("data:")) data += line.slice(5).trimStart();
            if (!data) continue; // a keep-alive comment
            const row = JSON.parse(data) as EventRow;
            last = row.seq;
            shard = row.shard;
            onEvent(row);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  })();
  return () => ctl.abort();
}

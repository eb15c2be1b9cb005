// The Drift page's one decision, kept apart from rendering so it is unit-tested without a
// browser (ui/tests/drift.test.mjs): how the drift category's events join into drifts.
import type { EventRow } from "./api";

/** One DriftDetected with what the log later said about it (within the range read). */
export interface DriftItem {
  seq: number; time: string; object: string;
  fields: { path: string; expected: string | null; actual: string | null }[];
  managers: string[];
  /** null: no DriftAttributed recorded (attribution off, or not yet done); []: none matched. */
  writers: string[] | null;
  ended: "put back" | "superseded" | null;
}

/** Joins the drift category's events (any order) into drifts: attributions by `drift_seq`,
 * corrections and supersessions to the newest earlier detection of the same object. */
export function joinDrifts(rows: EventRow[]): DriftItem[] {
  const items: DriftItem[] = [];
  const bySeq = new Map<number, DriftItem>();
  const latest = new Map<string, DriftItem[]>();
  for (const r of [...rows].sort((a, b) => a.seq - b.seq)) {
    const e = r.event ?? {};
    if (e.DriftDetected) {
      const d: DriftItem = {
        seq: r.seq, time: r.time, object: r.object ?? "?", fields: e.DriftDetected.diffs ?? [],
        managers: (e.DriftDetected.managers ?? []).map((m: any) => `${m.manager} (${m.operation})`), writers: null, ended: null,
      };
      items.push(d); bySeq.set(r.seq, d);
      latest.set(d.object, [...(latest.get(d.object) ?? []), d]);
    } else if (e.DriftAttributed) {
      const users: string[] = (e.DriftAttributed.writers ?? []).map((w: any) => w.username as string);
      const d = e.DriftAttributed.drift_seq != null ? bySeq.get(e.DriftAttributed.drift_seq) : undefined;
      if (d) d.writers = [...new Set(users)];
      else if (e.DriftAttributed.drift_seq == null) {
        // A write learnt of only through the audit log (an object created by hand): no detection.
        items.push({ seq: r.seq, time: r.time, object: r.object ?? "?", fields: [], managers: [], writers: [...new Set(users)], ended: null });
      }
    } else if (e.DriftCorrected || e.DriftSuperseded) {
      for (const d of latest.get(r.object ?? "") ?? []) if (!d.ended) d.ended = e.DriftCorrected ? "put back" : "superseded";
    }
  }
  return items.reverse();
}

